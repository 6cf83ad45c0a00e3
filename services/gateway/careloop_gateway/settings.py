"""Settings of the gateway (environment prefix `CARELOOP_`)."""

from __future__ import annotations

from pydantic import Field

from careloop_kit.settings import KitSettings

DEFAULT_ROUTES = {
    "patients": "http://127.0.0.1:8101",
    "audit": "http://127.0.0.1:8102",
    "identity": "http://127.0.0.1:8103",
    "scheduling": "http://127.0.0.1:8104",
    "messaging": "http://127.0.0.1:8105",
    "referrals": "http://127.0.0.1:8106",
    "tasks": "http://127.0.0.1:8107",
    "caregaps": "http://127.0.0.1:8108",
}


class GatewaySettings(KitSettings):
    http_port: int = Field(8100, description="Port of the public gateway API.")
    routes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ROUTES),
        description=(
            "Service name -> base URL; `/api/v1/<service>/<path>` goes to `<base>/<path>` "
            '(JSON, e.g. `{"patients": "http://127.0.0.1:8101"}`).'
        ),
    )
    upstream_timeout_s: float = Field(
        15.0, description="Seconds a service may take to answer before the gateway gives 504."
    )
    upstream_max_connections: int = Field(
        200, description="Connections the gateway keeps open to the services at most."
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        description=(
            "Largest request body accepted, in bytes (413 beyond), for services without "
            "their own limit in `CARELOOP_MAX_BODY_BYTES_BY_SERVICE`."
        ),
    )
    max_body_bytes_by_service: dict[str, int] = Field(
        default_factory=lambda: {"referrals": 16 * 1024 * 1024},
        description=(
            "Largest request body per published service, in bytes (JSON object). Referral "
            "packets carry their documents base64-encoded (about 4/3 of their size), so "
            "referrals get 16 MiB: several scanned documents of a packet in one request."
        ),
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (JSON list); empty sends no CORS headers.",
    )
    rate_limit_per_minute: int = Field(
        600,
        description=(
            "Sustained requests per minute per verified principal, and per client address "
            "for anonymous calls and bad tokens (token refill rate); a partner token's `rl` "
            "claim replaces it for that partner."
        ),
    )
    rate_limit_burst: int = Field(
        100,
        description=(
            "Requests a principal may send at once (token bucket size); a partner limit "
            "from `rl` gets a burst in the same proportion to its rate."
        ),
    )
    rate_limit_max_principals: int = Field(
        100_000,
        description=(
            "Rate-limit buckets (principals and client addresses) a replica keeps in memory "
            "at most, and as many digests of recently verified tokens."
        ),
    )
    idempotency_ttl_s: int = Field(
        24 * 3600, description="Seconds an Idempotency-Key and its stored response are kept."
    )
    idempotency_purge_interval_s: float = Field(
        600.0, description="How often expired idempotency records are deleted, in seconds."
    )
    openapi_cache_s: float = Field(
        60.0, description="Seconds the merged OpenAPI document is cached."
    )
