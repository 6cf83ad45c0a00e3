"""Settings shared by every service.

Every setting has a documented default suitable for local development; the
defaults that are secrets are marked as placeholders and production settings
refuse them, as they refuse any non-TLS URL.
"""

from __future__ import annotations

import ssl
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from careloop_contracts.platform import TOKEN_ISSUER

# Values that only ever make sense on a developer's machine. Production refuses them.
LOCAL_DEVELOPMENT_PLACEHOLDER = "local-development-only"

KAFKA_HEARTBEAT_INTERVAL_MS = 1_000
"""How often a consumer tells its group it is alive (`careloop_kit.bus.kafka.make_consumer`)."""


class KitSettings(BaseSettings):
    """Settings every Careloop service reads (environment prefix `CARELOOP_`)."""

    model_config = SettingsConfigDict(env_prefix="CARELOOP_", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development",
        description="Deployment environment; `production` enforces TLS and real secrets.",
    )
    http_host: str = Field("127.0.0.1", description="Interface the HTTP API listens on.")
    http_port: int = Field(8000, description="Port the HTTP API listens on.")
    http_tls_certfile: str | None = Field(
        None,
        description=(
            "PEM certificate (with its chain) the HTTP API serves TLS with; set together with "
            "`http_tls_keyfile`. Unset: plain HTTP (refused in production)."
        ),
    )
    http_tls_keyfile: str | None = Field(
        None, description="PEM private key of `http_tls_certfile`."
    )
    internal_ca_file: str | None = Field(
        None,
        description=(
            "CA bundle that signed the services' own HTTPS certificates. Calls to other "
            "Careloop services (JWKS, gateway routes, contact data, service tokens) trust it; "
            "unset: the public roots."
        ),
    )
    database_url: SecretStr = Field(
        SecretStr(
            f"postgresql+asyncpg://careloop:{LOCAL_DEVELOPMENT_PLACEHOLDER}@127.0.0.1:5432/careloop"
        ),
        description="SQLAlchemy URL of this service's own database (asyncpg driver).",
    )
    database_pool_size: int = Field(10, description="Connections kept open to the database.")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol; production requires SSL or SASL_SSL."
    )
    kafka_replication_factor: int = Field(
        1, description="Replication factor of topics the services create (3 on a real cluster)."
    )
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for Kafka TLS.")
    kafka_session_timeout_ms: int = Field(
        10_000,
        # Three missed heartbeats in a row must not yet cost a live consumer its partitions.
        gt=3 * KAFKA_HEARTBEAT_INTERVAL_MS,
        description=(
            "How long a consumer that stopped heartbeating (a crashed process) keeps its "
            "partitions before its group moves them to the others, in milliseconds. Consumers "
            f"heartbeat every {KAFKA_HEARTBEAT_INTERVAL_MS} ms, so it must stay above three "
            "times that; brokers refuse values outside their `group.min.session.timeout.ms` "
            "and `group.max.session.timeout.ms` (6000 and 1800000 by default). Shorter moves a "
            "dead consumer's work sooner; longer rides out longer pauses (GC, a busy host)."
        ),
    )
    topic_prefix: str = Field(
        "", description="Prefix added to every topic name (isolates tests and shared clusters)."
    )
    vault_addr: str = Field("http://127.0.0.1:8200", description="OpenBao / Vault API address.")
    vault_token: SecretStr = Field(
        SecretStr(LOCAL_DEVELOPMENT_PLACEHOLDER),
        description="Token for this service's Vault policy.",
    )
    vault_token_file: str | None = Field(
        None,
        description=(
            "File holding this service's Vault token (a Vault agent's sink, or compose's "
            "bootstrap output); re-read whenever it changes. Used instead of `vault_token`."
        ),
    )
    vault_ca_cert: str | None = Field(None, description="CA bundle for Vault TLS.")
    auth_jwks_url: str = Field(
        "http://127.0.0.1:8103/.well-known/jwks.json",
        description="Identity's JWKS document, used to verify access tokens.",
    )
    auth_issuer: str = Field(TOKEN_ISSUER, description="Expected `iss` of access tokens.")
    auth_audience: str = Field("careloop", description="Expected `aud` of access tokens.")
    auth_jwks_ttl_s: int = Field(300, description="Seconds the JWKS document is cached.")
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description=(
            "OTLP/HTTP endpoint traces (`/v1/traces`) and metrics (`/v1/metrics`) are exported "
            "to (an OpenTelemetry collector, e.g. `http://otel-collector:4318`); unset: traces "
            "stay in the process and metrics are served on `/metrics` only."
        ),
    )
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="Structured JSON logs with trace ids.")
    outbox_batch_size: int = Field(500, description="Outbox rows the relay publishes per batch.")
    outbox_poll_interval_s: float = Field(
        0.05, description="Relay sleep when the outbox is empty, in seconds."
    )
    consumer_max_retries: int = Field(
        3, description="Attempts of a failing event before it goes to the dead-letter topic."
    )
    consumer_retry_backoff_s: float = Field(
        0.2, description="First retry delay in seconds; doubles on each retry."
    )
    readiness_interval_s: float = Field(
        2.0,
        gt=0,
        description=(
            "How often database, broker and Vault reachability is re-checked, in seconds. "
            "`/readyz` and the refusal of API requests report the latest checks; they never "
            "check on their own."
        ),
    )
    readiness_failure_threshold: int = Field(
        3,
        ge=1,
        description=(
            "Failed readiness checks in a row after which a dependency (database, broker, "
            "Vault) counts as down: the service then answers API requests and `/readyz` with "
            "503. One successful check counts it up again. Fewer failures show in `/readyz` "
            "(`errors`, `failures`) but keep the service serving, so one slow answer on a busy "
            "host does not turn traffic away. An outage is acted on after about this many "
            "times `readiness_interval_s` (6 s by default). Until each dependency has answered "
            "once after start-up the service is not ready, whatever the threshold; start-up "
            "checks up to this many times, half a second apart, before the service serves."
        ),
    )

    @model_validator(mode="after")
    def _production_is_locked_down(self) -> KitSettings:
        if self.environment != "production":
            return self
        problems: list[str] = []
        secret_settings = (
            ["database_url"] if self.vault_token_file else ["database_url", "vault_token"]
        )
        for name in secret_settings:
            value = getattr(self, name).get_secret_value()
            if LOCAL_DEVELOPMENT_PLACEHOLDER in value:
                problems.append(f"{name} still holds the local-development placeholder")
        if not (self.http_tls_certfile and self.http_tls_keyfile):
            problems.append("http_tls_certfile and http_tls_keyfile must be set in production")
        if not self.auth_jwks_url.startswith("https://"):
            problems.append("auth_jwks_url must use https:// in production")
        if not self.vault_addr.startswith("https://"):
            problems.append("vault_addr must use https:// in production")
        if self.kafka_security_protocol == "PLAINTEXT":
            problems.append("kafka_security_protocol must be SSL or SASL_SSL in production")
        if not _database_url_requires_tls(self.database_url.get_secret_value()):
            problems.append("database_url must require TLS (ssl=require or sslmode=verify-full)")
        if problems:
            raise ValueError("production settings refused: " + "; ".join(problems))
        return self


def _database_url_requires_tls(url: str) -> bool:
    query = parse_qs(urlsplit(url).query)
    wanted = {"require", "verify-ca", "verify-full"}
    return bool(wanted & set(query.get("ssl", []) + query.get("sslmode", [])))


def internal_verify(settings: KitSettings) -> ssl.SSLContext | bool:
    """What clients of other Careloop services verify their certificates against."""
    if settings.internal_ca_file:
        return ssl.create_default_context(cafile=settings.internal_ca_file)
    return True
