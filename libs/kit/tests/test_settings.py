from __future__ import annotations

import pytest
from pydantic import ValidationError

from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER, KitSettings

pytestmark = pytest.mark.unit

TLS = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://svc:s3cret@db.internal/patients?ssl=verify-full",
    "vault_addr": "https://vault.internal:8200",
    "vault_token": "hvs.real-token",
    "kafka_security_protocol": "SSL",
    "auth_jwks_url": "https://identity.internal/.well-known/jwks.json",
    "http_tls_certfile": "/etc/careloop/tls/tls.crt",
    "http_tls_keyfile": "/etc/careloop/tls/tls.key",
}


def test_development_defaults_are_usable_without_configuration() -> None:
    settings = KitSettings()

    assert settings.environment == "development"
    assert LOCAL_DEVELOPMENT_PLACEHOLDER in settings.vault_token.get_secret_value()


def test_production_accepts_tls_everywhere_and_real_secrets() -> None:
    assert KitSettings(**TLS).environment == "production"


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"vault_token": LOCAL_DEVELOPMENT_PLACEHOLDER}, "vault_token"),
        (
            {
                "database_url": f"postgresql+asyncpg://u:{LOCAL_DEVELOPMENT_PLACEHOLDER}@db/x?ssl=require"
            },
            "placeholder",
        ),
        ({"vault_addr": "http://vault.internal:8200"}, "https"),
        ({"auth_jwks_url": "http://identity.internal/.well-known/jwks.json"}, "auth_jwks_url"),
        ({"kafka_security_protocol": "PLAINTEXT"}, "kafka_security_protocol"),
        ({"database_url": "postgresql+asyncpg://svc:s3cret@db.internal/patients"}, "TLS"),
        ({"http_tls_keyfile": None}, "http_tls_certfile and http_tls_keyfile"),
    ],
)
def test_production_refuses_placeholders_and_plaintext_transport(
    override: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        KitSettings(**{**TLS, **override})
