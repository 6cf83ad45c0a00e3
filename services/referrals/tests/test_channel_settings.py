"""Production refuses the report channels' insecure choices, as it refuses plain SMTP."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from careloop_referrals.settings import ReferralsSettings

pytestmark = pytest.mark.unit

PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "http_tls_certfile": "/etc/careloop/tls/tls.crt",
    "http_tls_keyfile": "/etc/careloop/tls/tls.key",
    "auth_jwks_url": "https://identity.careloop.svc/.well-known/jwks.json",
    "vault_addr": "https://vault.vault.svc:8200",
    "vault_token_file": "/vault/secrets/token",
    "kafka_security_protocol": "SSL",
    "database_url": "postgresql+asyncpg://referrals:synthetic@db/referrals?ssl=verify-full",
    "report_delivery_mode": "provider",
}


def test_production_settings_with_tls_everywhere_are_accepted() -> None:
    settings = ReferralsSettings(**PRODUCTION)
    assert settings.direct_relay_security == "starttls"
    assert settings.fax_api_base_url.startswith("https://")


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"direct_relay_security": "none"}, "direct_relay_security must be starttls or tls"),
        ({"fax_api_base_url": "http://fax.example/v2.1"}, "fax_api_base_url must use https://"),
        ({"smtp_security": "none"}, "smtp_security must be starttls or tls"),
    ],
)
def test_production_refuses_a_report_channel_in_plaintext(
    change: dict[str, str], refusal: str
) -> None:
    with pytest.raises(ValidationError, match=refusal):
        ReferralsSettings(**{**PRODUCTION, **change})
