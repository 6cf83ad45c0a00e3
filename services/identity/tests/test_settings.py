"""Production settings refuse the placeholder bootstrap token."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from careloop_identity.settings import IdentitySettings

pytestmark = pytest.mark.unit

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://identity:pw@db:5432/identity?ssl=require",
    "vault_addr": "https://vault:8200",
    "vault_token": "real-token",
    "kafka_security_protocol": "SSL",
    "auth_jwks_url": "https://identity:8103/.well-known/jwks.json",
    "http_tls_certfile": "/etc/careloop/tls/tls.crt",
    "http_tls_keyfile": "/etc/careloop/tls/tls.key",
}


def test_production_refuses_the_placeholder_bootstrap_token() -> None:
    with pytest.raises(ValidationError, match="bootstrap_token"):
        IdentitySettings(**PRODUCTION)  # type: ignore[arg-type]


def test_production_accepts_a_real_bootstrap_token() -> None:
    settings = IdentitySettings(**PRODUCTION, bootstrap_token="s3cret-from-the-vault")  # type: ignore[arg-type]
    assert settings.http_port == 8103
    assert settings.access_token_ttl_s == 300
