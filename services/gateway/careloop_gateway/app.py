"""Composition root of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from careloop_gateway.api.docs import router as docs_router
from careloop_gateway.api.proxy import router as proxy_router
from careloop_gateway.api.state import STATE_KEY, Gateway
from careloop_gateway.domain.ratelimit import RateLimiter, VerifiedTokens
from careloop_gateway.settings import GatewaySettings
from careloop_gateway.store.tables import metadata, platform
from careloop_gateway.usecases import idempotency
from careloop_kit.auth.jwks import JwksSource
from careloop_kit.clock import Clock
from careloop_kit.service import Runtime, ServiceSpec, create_service_app
from careloop_kit.settings import internal_verify

SERVICE = "gateway"
EXPOSED_HEADERS = [
    "X-Request-Id",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "Retry-After",
    "Idempotent-Replayed",
]

log = logging.getLogger(__name__)


def build_spec(settings: GatewaySettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        # One pooled client for every upstream call of this process.
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_connections,
            ),
            follow_redirects=False,
            trust_env=False,
            verify=internal_verify(settings),
        )
        runtime.state[STATE_KEY] = Gateway(
            settings=settings,
            http=http,
            limiter=RateLimiter(
                settings.rate_limit_per_minute,
                settings.rate_limit_burst,
                max_keys=settings.rate_limit_max_principals,
            ),
            verified=VerifiedTokens(max_tokens=settings.rate_limit_max_principals),
        )

    async def on_shutdown(runtime: Runtime) -> None:
        gateway: Gateway | None = runtime.state.pop(STATE_KEY, None)
        if gateway is not None:
            await gateway.http.aclose()

    async def purge_expired_keys(runtime: Runtime, stop: asyncio.Event) -> None:
        """Delete idempotency records past their lifetime, every few minutes."""
        while not stop.is_set():
            purged = await idempotency.purge_expired_keys(runtime, settings.idempotency_ttl_s)
            if purged:
                log.info("purged %d expired idempotency records", purged)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.idempotency_purge_interval_s)

    return ServiceSpec(
        name=SERVICE,
        description=(
            "The public entry of Careloop: routing, token check, rate limits, request ids, "
            "idempotency keys and the merged OpenAPI document."
        ),
        metadata=metadata,
        tables=platform,
        routers=[docs_router, proxy_router],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        background=[purge_expired_keys],
        verifies_tokens=True,
    )


def create_app(
    settings: GatewaySettings | None = None,
    *,
    clock: Clock | None = None,
    jwks: JwksSource | None = None,
) -> FastAPI:
    """The gateway API with its runtime lifespan (`jwks` replaces identity's keys in tests)."""
    settings = settings or GatewaySettings()
    app = create_service_app(build_spec(settings), settings, clock=clock, jwks=jwks)
    if settings.cors_allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allowed_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Request-Id",
                "traceparent",
            ],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    return app
