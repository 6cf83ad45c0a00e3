"""The gateway's live objects, built in the lifespan and kept in `runtime.state`."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from fastapi import Request

from careloop_gateway.domain.ratelimit import RateLimiter, VerifiedTokens
from careloop_gateway.settings import GatewaySettings
from careloop_gateway.usecases.openapi import OpenApiCache
from careloop_kit.service import Runtime

STATE_KEY = "gateway"


@dataclass
class Gateway:
    settings: GatewaySettings
    http: httpx.AsyncClient
    limiter: RateLimiter
    verified: VerifiedTokens
    openapi: OpenApiCache = field(default_factory=OpenApiCache)


def get_runtime_and_gateway(request: Request) -> tuple[Runtime, Gateway]:
    runtime: Runtime = request.app.state.runtime
    gateway: Gateway = runtime.state[STATE_KEY]
    return runtime, gateway
