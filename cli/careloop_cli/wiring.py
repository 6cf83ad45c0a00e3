"""How services find each other: the settings every deployment sets per service.

`make run`, docker-compose and the Helm chart each set these, from their own notion
of where a service lives (a local port, a compose service name, a Kubernetes Service).
This module is the list they are checked against, and `make run`'s way of filling it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

COMMON_SETTINGS: tuple[str, ...] = (
    "CARELOOP_ENVIRONMENT",
    "CARELOOP_HTTP_HOST",
    "CARELOOP_HTTP_PORT",
    "CARELOOP_DATABASE_URL",
    "CARELOOP_KAFKA_BOOTSTRAP",
    "CARELOOP_VAULT_ADDR",
    "CARELOOP_VAULT_TOKEN",
    "CARELOOP_AUTH_JWKS_URL",
    "CARELOOP_LOG_JSON",
)
"""Set for every service by every deployment."""

SERVICE_SETTINGS: dict[str, tuple[str, ...]] = {
    "gateway": ("CARELOOP_ROUTES",),
    "messaging": (
        "CARELOOP_PATIENTS_URL",
        "CARELOOP_IDENTITY_TOKEN_URL",
        "CARELOOP_SECURE_LINK_BASE",
    ),
    "identity": ("CARELOOP_BOOTSTRAP_TOKEN",),
    "caregaps": ("CARELOOP_PATIENTS_URL", "CARELOOP_IDENTITY_TOKEN_URL"),
}
"""Set for one service only: where the services it calls live, and its own secrets."""

SECRET_SETTINGS: frozenset[str] = frozenset(
    {
        "CARELOOP_DATABASE_URL",
        "CARELOOP_VAULT_TOKEN",
        "CARELOOP_BOOTSTRAP_TOKEN",
        "CARELOOP_TWILIO_AUTH_TOKEN",
        "CARELOOP_SMTP_PASSWORD",
    }
)
"""Never a literal value in a deployment file: they come from Vault, a secrets directory
(`CARELOOP_SECRETS_DIR`), a token file (`CARELOOP_VAULT_TOKEN_FILE`), or, in compose
only, a default marked `local-development-only` that production settings refuse."""

SECRETS_DIR_VARIABLE = "CARELOOP_SECRETS_DIR"
"""Read by the `careloop` command, not a service setting: a directory whose files, named
after a setting's variable in lower case, supply secret settings."""

LINKS_PATH = "/api/v1/messaging/links"
"""Where the gateway serves messaging's secure links."""

TWILIO_CALLBACK_PATHS = {
    "CARELOOP_TWILIO_STATUS_CALLBACK_URL": "/api/v1/messaging/webhooks/twilio/status",
    "CARELOOP_TWILIO_INBOUND_URL": "/api/v1/messaging/webhooks/twilio/inbound",
}
"""Where Twilio reaches messaging through the gateway; Twilio signs the exact URL."""


def required_settings(service: str) -> tuple[str, ...]:
    """Every setting a deployment must give `service`."""
    return COMMON_SETTINGS + SERVICE_SETTINGS.get(service, ())


def service_urls(service: str, urls: Mapping[str, str], public_url: str) -> dict[str, str]:
    """The wiring settings of `service`, given each service's base URL as seen from inside
    the deployment and the gateway's public URL (which links in messages point to)."""
    env = {"CARELOOP_AUTH_JWKS_URL": f"{urls['identity']}/.well-known/jwks.json"}
    if service == "gateway":
        env["CARELOOP_ROUTES"] = json.dumps(
            {name: url for name, url in urls.items() if name != "gateway"}
        )
    if service in ("messaging", "caregaps"):
        # Contact data (messaging) and demographics (caregaps) come from patients, each
        # read with the service's own identity.
        env["CARELOOP_PATIENTS_URL"] = urls["patients"]
        env["CARELOOP_IDENTITY_TOKEN_URL"] = f"{urls['identity']}/oauth/token"
    if service == "messaging":
        env["CARELOOP_SECURE_LINK_BASE"] = public_url.rstrip("/") + LINKS_PATH
        for name, path in TWILIO_CALLBACK_PATHS.items():
            env[name] = public_url.rstrip("/") + path
    return env
