"""The merged OpenAPI document of the public API, and interactive docs over it.

Both are public and check no token, so they count against the client address' budget.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse

from careloop_gateway.api.limits import problem, rate_headers, rate_limited, take_anonymous
from careloop_gateway.api.state import Gateway, get_runtime_and_gateway
from careloop_gateway.domain.openapi import merge_documents

router = APIRouter(tags=["docs"])

OPENAPI_PATH = "/api/v1/openapi.json"
FETCH_TIMEOUT_S = 5.0
INFO = {
    "title": "Careloop API",
    "version": "v1",
    "description": (
        "The public API of Careloop, served by the gateway. Every path is "
        "`/api/v1/<service>/...`; errors are RFC 9457 problem+json; every response carries "
        "X-Request-Id, RateLimit-Limit and RateLimit-Remaining; POSTs accept an "
        "Idempotency-Key."
    ),
}


async def _fetch(gateway: Gateway, service: str, base: str) -> dict[str, Any] | None:
    timeout = min(FETCH_TIMEOUT_S, gateway.settings.upstream_timeout_s)
    try:
        response = await gateway.http.get(base.rstrip("/") + "/openapi.json", timeout=timeout)
        document = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return document if isinstance(document, dict) and "paths" in document else None


async def build_document(gateway: Gateway) -> dict[str, Any]:
    """Fetch every service's document and merge them; a service that is down is listed."""
    routes = sorted(gateway.settings.routes.items())
    fetched = await asyncio.gather(*(_fetch(gateway, name, base) for name, base in routes))
    documents = {name: doc for (name, _), doc in zip(routes, fetched, strict=True) if doc}
    unavailable = [name for (name, _), doc in zip(routes, fetched, strict=True) if not doc]
    return merge_documents(INFO, documents, unavailable)


@router.get(OPENAPI_PATH, include_in_schema=False)
async def merged_openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of the whole public API (cached briefly)."""
    decision = take_anonymous(request)
    headers = rate_headers(decision)
    if not decision.allowed:
        return problem(request, rate_limited(decision), headers)
    runtime, gateway = get_runtime_and_gateway(request)
    cache = gateway.openapi
    async with cache.lock:
        now = runtime.clock.now().timestamp()
        if cache.document is None or now - cache.built_at >= gateway.settings.openapi_cache_s:
            cache.document = await build_document(gateway)
            cache.built_at = now
        document = cache.document
    return JSONResponse(document, headers=headers)


@router.get("/api/v1/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> Response:
    """Interactive documentation of the public API."""
    decision = take_anonymous(request)
    headers = rate_headers(decision)
    if not decision.allowed:
        return problem(request, rate_limited(decision), headers)
    response = get_swagger_ui_html(openapi_url=OPENAPI_PATH, title="Careloop API")
    response.headers.update(headers)
    return response
