"""Authentication and authorization shared by every service.

- `tokens`: `TokenVerifier` checks identity's EdDSA access tokens.
- `jwks`: where the public keys come from (`HttpJwksSource`, `StaticJwksSource`).
- `revocation`: `RevokedSessions`, fed by the session-revoked event.
- `permissions`: THE PERMISSION TABLE (roles x permissions x PHI categories).
- `dependencies`: `require(permission)` for FastAPI routes.
- `principal`: `Principal`, `AuthenticatedPrincipal` and the temporary header seam.
- `service_identity`: `ServiceTokenSource`, a service's own access tokens (JWT-bearer
  assertion signed by its Vault transit key; no shared secret).
"""

from careloop_kit.auth.dependencies import (
    PERMISSION_ATTRIBUTE,
    TOKEN_VERIFIER_KEY,
    AuthNotConfigured,
    MfaRequired,
    authenticate,
    bearer_token,
    ensure_mfa,
    ensure_token_verifier,
    install_auth_handlers,
    lacks_required_mfa,
    permits,
    principal_from_claims,
    require,
    required_permission,
    token_verifier_of,
    visible_categories,
)
from careloop_kit.auth.jwks import (
    HttpJwksSource,
    JwksError,
    JwksSource,
    StaticJwksSource,
    parse_jwks,
    public_jwk,
)
from careloop_kit.auth.permissions import (
    PERMISSION_TABLE,
    PERMISSIONS,
    PHI_CATEGORIES,
    ROLES,
    allowed,
    phi_categories,
    requires_mfa,
    roles_with,
)
from careloop_kit.auth.principal import (
    ALL_LOCATIONS,
    ActorType,
    AuthenticatedPrincipal,
    Principal,
)
from careloop_kit.auth.revocation import RevokedSessions
from careloop_kit.auth.service_identity import (
    JWT_BEARER_GRANT_TYPE,
    ServiceCredentials,
    ServiceTokenError,
    ServiceTokenSource,
    service_key_name,
)
from careloop_kit.auth.tokens import (
    ACCESS_TOKEN_TYPE,
    SIGNING_KEY_NAME,
    Claims,
    InvalidToken,
    TokenVerifier,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALL_LOCATIONS",
    "JWT_BEARER_GRANT_TYPE",
    "PERMISSIONS",
    "PERMISSION_ATTRIBUTE",
    "PERMISSION_TABLE",
    "PHI_CATEGORIES",
    "ROLES",
    "SIGNING_KEY_NAME",
    "TOKEN_VERIFIER_KEY",
    "ActorType",
    "AuthNotConfigured",
    "AuthenticatedPrincipal",
    "Claims",
    "HttpJwksSource",
    "InvalidToken",
    "JwksError",
    "JwksSource",
    "MfaRequired",
    "Principal",
    "RevokedSessions",
    "ServiceCredentials",
    "ServiceTokenError",
    "ServiceTokenSource",
    "StaticJwksSource",
    "TokenVerifier",
    "allowed",
    "authenticate",
    "bearer_token",
    "ensure_mfa",
    "ensure_token_verifier",
    "install_auth_handlers",
    "lacks_required_mfa",
    "parse_jwks",
    "permits",
    "phi_categories",
    "principal_from_claims",
    "public_jwk",
    "require",
    "required_permission",
    "requires_mfa",
    "roles_with",
    "service_key_name",
    "token_verifier_of",
    "visible_categories",
]
