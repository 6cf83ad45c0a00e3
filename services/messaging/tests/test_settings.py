"""Messaging settings: production refuses plaintext delivery and placeholder secrets."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from careloop_messaging.settings import MessagingSettings

pytestmark = pytest.mark.unit

# The kit's own production checks, satisfied so only messaging's are exercised.
KIT_PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "database_url": SecretStr("postgresql+asyncpg://m:pw@db:5432/m?ssl=require"),
    "vault_token": SecretStr("s." + secrets.token_hex(8)),
    "vault_addr": "https://vault:8200",
    "auth_jwks_url": "https://identity/.well-known/jwks.json",
    "kafka_security_protocol": "SSL",
    "http_tls_certfile": "/etc/careloop/tls/tls.crt",
    "http_tls_keyfile": "/etc/careloop/tls/tls.key",
}


def test_development_defaults_load() -> None:
    settings = MessagingSettings()
    assert settings.smtp_config().security == "starttls"
    assert settings.neutral_sender_name == "Your care team"


def test_production_refuses_plaintext_and_placeholders() -> None:
    with pytest.raises(ValidationError) as refused:
        MessagingSettings.model_validate(
            {**KIT_PRODUCTION, "smtp_security": "none", "twilio_api_base": "http://127.0.0.1:9"}
        )
    text = str(refused.value)
    for problem in (
        "twilio_auth_token",
        "twilio_api_base",
        "smtp_security",
        "twilio_from_number",
        "delivery_mode=log",
        "secure_link_base",
        "patients_url",
    ):
        assert problem in text


def test_production_accepts_tls_and_real_looking_secrets() -> None:
    password = secrets.token_hex(8)
    settings = MessagingSettings.model_validate(
        {
            **KIT_PRODUCTION,
            "twilio_auth_token": SecretStr(secrets.token_hex(16)),
            "twilio_messaging_service_sid": "MG" + secrets.token_hex(16),
            "smtp_security": "tls",
            "smtp_password": SecretStr(password),
            "delivery_mode": "provider",
            "secure_link_base": "https://portal.example.test/m",
            "patients_url": "https://patients.internal",
            "identity_token_url": "https://identity.internal/oauth/token",
        }
    )
    assert settings.smtp_config().password == password
