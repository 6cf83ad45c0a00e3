"""Settings of the identity service (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER, KitSettings


class IdentitySettings(KitSettings):
    http_port: int = Field(8103, description="Port of the identity API.")
    token_issuer: str = Field(
        "careloop-identity", description="`iss` claim of the access tokens this service issues."
    )
    access_token_ttl_s: int = Field(
        300, ge=30, le=3600, description="Lifetime of an access token, in seconds."
    )
    session_idle_timeout_s: int = Field(
        1800, ge=60, description="A session ends when not refreshed for this many seconds."
    )
    session_absolute_timeout_s: int = Field(
        43_200, ge=300, description="A session ends this many seconds after login, regardless."
    )
    lockout_threshold: int = Field(
        5, ge=1, description="Consecutive failed logins that lock an account."
    )
    lockout_duration_s: int = Field(
        900, ge=1, description="How long a locked account stays locked, in seconds."
    )
    break_glass_ttl_s: int = Field(
        3600,
        ge=60,
        le=43_200,
        description="How long a break-glass grant opens its patient, in seconds.",
    )
    signing_key: str = Field(
        "careloop-identity-signing",
        description="Vault transit key (ed25519) that signs access tokens.",
    )
    totp_key_secret_path: str = Field(
        "careloop/identity/totp-key",
        description="KV v2 path of the key that encrypts TOTP secrets (field `key`, base64).",
    )
    totp_issuer: str = Field("Careloop", description="Issuer name shown by authenticator apps.")
    bootstrap_token: SecretStr = Field(
        SecretStr(LOCAL_DEVELOPMENT_PLACEHOLDER),
        description=(
            "Shared secret in the `X-Bootstrap-Token` header of the platform operator's "
            "endpoints: creating (with its first org admin) and listing organizations."
        ),
    )
    partner_rate_limit_per_minute: int = Field(
        600,
        ge=1,
        le=1_000_000,
        description=(
            "Requests per minute a new partner API client may send (its tokens' `rl` claim, "
            "enforced by the gateway) unless its administrator sets another limit. Partner "
            "tokens live `access_token_ttl_s`, like every access token."
        ),
    )

    @model_validator(mode="after")
    def _issuer_is_the_one_verified(self) -> IdentitySettings:
        if self.token_issuer != self.auth_issuer:
            raise ValueError(
                "token_issuer and auth_issuer must be equal: identity verifies the tokens "
                "it issues like every other service"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholder_bootstrap_token(self) -> IdentitySettings:
        if self.environment == "production" and (
            LOCAL_DEVELOPMENT_PLACEHOLDER in self.bootstrap_token.get_secret_value()
        ):
            raise ValueError(
                "production settings refused: bootstrap_token still holds the "
                "local-development placeholder"
            )
        return self
