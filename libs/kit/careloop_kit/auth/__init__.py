"""Authentication and authorization shared by every service.

- `tokens`: `TokenVerifier` checks identity's EdDSA access tokens.
- `jwks`: where the public keys come from (`HttpJwksSource`, `StaticJwksSource`).
- `revocation`: `RevokedSessions`, fed by the session-revoked event.
- `permissions`: THE PERMISSION TABLE (roles x permissions x PHI categories).
- `dependencies`: `require(permission)` for FastAPI routes.
- `principal`: `Principal`, `AuthenticatedPrincipal` and the temporary header seam.
  `principal` and `permissions` import no web, database or messaging framework.
- `service_identity`: `ServiceTokenSource`, a service's own access tokens (JWT-bearer
  assertion signed by its Vault transit key; no shared secret).

Every name below is loaded on first use (PEP 562), not when the package is imported, so
`careloop_kit.auth.principal` and `careloop_kit.auth.permissions` stay free of FastAPI,
httpx and the rest for a pure `domain/`, and `careloop_kit.audit` (which needs the
principal) never meets `dependencies` (which needs the audit hook) half-built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES: dict[str, str] = {
    "PERMISSION_ATTRIBUTE": "careloop_kit.auth.dependencies",
    "TOKEN_VERIFIER_KEY": "careloop_kit.auth.dependencies",
    "AuthNotConfigured": "careloop_kit.auth.dependencies",
    "MfaRequired": "careloop_kit.auth.dependencies",
    "authenticate": "careloop_kit.auth.dependencies",
    "bearer_token": "careloop_kit.auth.dependencies",
    "ensure_mfa": "careloop_kit.auth.dependencies",
    "ensure_token_verifier": "careloop_kit.auth.dependencies",
    "install_auth_handlers": "careloop_kit.auth.dependencies",
    "lacks_required_mfa": "careloop_kit.auth.dependencies",
    "permits": "careloop_kit.auth.dependencies",
    "principal_from_claims": "careloop_kit.auth.dependencies",
    "require": "careloop_kit.auth.dependencies",
    "required_permission": "careloop_kit.auth.dependencies",
    "token_verifier_of": "careloop_kit.auth.dependencies",
    "visible_categories": "careloop_kit.auth.dependencies",
    "HttpJwksSource": "careloop_kit.auth.jwks",
    "JwksError": "careloop_kit.auth.jwks",
    "JwksSource": "careloop_kit.auth.jwks",
    "StaticJwksSource": "careloop_kit.auth.jwks",
    "parse_jwks": "careloop_kit.auth.jwks",
    "public_jwk": "careloop_kit.auth.jwks",
    "PERMISSION_TABLE": "careloop_kit.auth.permissions",
    "PERMISSIONS": "careloop_kit.auth.permissions",
    "PHI_CATEGORIES": "careloop_kit.auth.permissions",
    "ROLES": "careloop_kit.auth.permissions",
    "allowed": "careloop_kit.auth.permissions",
    "phi_categories": "careloop_kit.auth.permissions",
    "requires_mfa": "careloop_kit.auth.permissions",
    "roles_with": "careloop_kit.auth.permissions",
    "ALL_LOCATIONS": "careloop_kit.auth.principal",
    "ActorType": "careloop_kit.auth.principal",
    "AuthenticatedPrincipal": "careloop_kit.auth.principal",
    "Principal": "careloop_kit.auth.principal",
    "RevokedSessions": "careloop_kit.auth.revocation",
    "JWT_BEARER_GRANT_TYPE": "careloop_kit.auth.service_identity",
    "ServiceCredentials": "careloop_kit.auth.service_identity",
    "ServiceTokenError": "careloop_kit.auth.service_identity",
    "ServiceTokenSource": "careloop_kit.auth.service_identity",
    "service_key_name": "careloop_kit.auth.service_identity",
    "ACCESS_TOKEN_TYPE": "careloop_kit.auth.tokens",
    "SIGNING_KEY_NAME": "careloop_kit.auth.tokens",
    "Claims": "careloop_kit.auth.tokens",
    "InvalidToken": "careloop_kit.auth.tokens",
    "TokenVerifier": "careloop_kit.auth.tokens",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
