"""The merged OpenAPI document of the public API, and interactive docs over it.

Both are public and check no token, so they count against the client address' budget.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse

from careloop_gateway.api.limits import problem, rate_headers, rate_limited, take_anonymous
from careloop_gateway.api.state import get_runtime_and_gateway
from careloop_gateway.usecases.openapi import merged_document

router = APIRouter(tags=["docs"])

OPENAPI_PATH = "/api/v1/openapi.json"


@router.get(OPENAPI_PATH, include_in_schema=False)
async def merged_openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of the whole public API (cached briefly)."""
    decision = take_anonymous(request)
    headers = rate_headers(decision)
    if not decision.allowed:
        return problem(request, rate_limited(decision), headers)
    runtime, gateway = get_runtime_and_gateway(request)
    settings = gateway.settings
    document = await merged_document(
        gateway.openapi,
        gateway.http,
        settings.routes,
        now=runtime.clock.now().timestamp(),
        max_age_s=settings.openapi_cache_s,
        upstream_timeout_s=settings.upstream_timeout_s,
    )
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
