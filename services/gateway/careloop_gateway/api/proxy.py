"""`/api/v1/<service>/<path>`: the public API, forwarded to the service that owns it.

This is the one place where Careloop calls services synchronously over HTTP: the
gateway exists to answer a client's HTTP request with the owning service's answer,
so the call cannot be an event. Services never call each other this way.

Every request is first admitted (`api/limits.py`: client-address budget for anonymous
traffic and bad tokens, then token verification, then the verified principal's
budget), then routed, then forwarded; every answer carries the rate-limit headers of
the bucket it was charged to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from opentelemetry import propagate, trace
from starlette.background import BackgroundTask

from careloop_gateway.api.limits import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    PayloadTooLarge,
    ServiceNotFound,
    UpstreamTimeout,
    UpstreamUnreachable,
    admit,
    problem,
    rate_headers,
)
from careloop_gateway.api.principal import principal_key
from careloop_gateway.api.state import Gateway, get_runtime_and_gateway
from careloop_gateway.domain import headers as header_rules
from careloop_gateway.domain.idempotency import (
    InvalidKey,
    Outcome,
    decide,
    is_search,
    request_hash,
    should_store,
    validate_key,
)
from careloop_gateway.usecases.idempotency import claim_key, complete_key, release_key
from careloop_kit.problems import ProblemError
from careloop_kit.service import OPERATIONS_PATHS, Runtime

router = APIRouter()
tracer = trace.get_tracer("careloop.gateway")

API_PREFIX = "/api/v1"
PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
REPLAYED_HEADER = "Idempotent-Replayed"


class _Upstream:
    """Where one request goes and what it carries."""

    def __init__(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes):
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


def _raw_headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in pairs]


def _too_large(limit: int) -> str:
    return (
        f"The request body exceeds this service's limit of {limit} bytes: send a smaller "
        "body, or ask the operator to raise the service's limit "
        "(CARELOOP_MAX_BODY_BYTES_BY_SERVICE, else CARELOOP_MAX_BODY_BYTES)."
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _upstream_path(request: Request, service: str, path: str) -> str:
    """The path to request from the service, kept percent-encoded as the client sent it."""
    raw = request.scope.get("raw_path")
    prefix = f"{API_PREFIX}/{service}/"
    if isinstance(raw, bytes):
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        if raw_path.startswith(prefix):
            return "/" + raw_path[len(prefix) :]
    return "/" + quote(path)


async def _send(gateway: Gateway, target: _Upstream, *, service: str) -> httpx.Response:
    request = gateway.http.build_request(
        target.method, target.url, headers=target.headers, content=target.body
    )
    try:
        return await gateway.http.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"The {service} service did not answer within "
            f"{gateway.settings.upstream_timeout_s:g} seconds."
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(f"The {service} service is unreachable; retry shortly.") from exc


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    # Closing here as well as in the background task returns the connection to the pool
    # even when the client goes away mid-body.
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


async def _forward_streaming(gateway: Gateway, target: _Upstream, service: str) -> Response:
    upstream = await _send(gateway, target, service=service)
    response = StreamingResponse(
        _relay(upstream),
        status_code=upstream.status_code,
        background=BackgroundTask(upstream.aclose),
    )
    response.raw_headers = _raw_headers(
        header_rules.response_headers(upstream.headers.multi_items())
    )
    return response


async def _forward_buffered(
    gateway: Gateway, target: _Upstream, service: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    upstream = await _send(gateway, target, service=service)
    try:
        body = b"".join([chunk async for chunk in upstream.aiter_raw()])
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"The {service} service stopped answering mid-response.") from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(f"The {service} service dropped the connection.") from exc
    finally:
        await upstream.aclose()
    kept = [
        (n, v)
        for n, v in header_rules.response_headers(upstream.headers.multi_items())
        if n != "content-length"
    ]
    return upstream.status_code, kept, body


def _buffered_response(
    status_code: int, headers: list[tuple[str, str]], body: bytes, *, replayed: bool = False
) -> Response:
    response = Response(content=body, status_code=status_code)
    response.raw_headers.extend(_raw_headers(headers))
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


async def _idempotent(
    request: Request,
    runtime: Runtime,
    gateway: Gateway,
    target: _Upstream,
    *,
    service: str,
    key: str,
    fingerprint: str,
) -> Response:
    """Forward a POST at most once per (principal, key); replay its stored answer after."""
    principal = principal_key(request)
    existing = await claim_key(runtime, gateway.settings, principal, key, fingerprint)
    if existing is not None:
        outcome = decide(existing, fingerprint)
        if outcome is Outcome.MISMATCH:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different request; use a new key."
            )
        if outcome is Outcome.IN_PROGRESS:
            raise IdempotencyInProgress(
                "A request with this Idempotency-Key is still being processed; retry shortly."
            )
        return _buffered_response(
            existing.status_code or 200, existing.headers, existing.body or b"", replayed=True
        )

    try:
        status_code, headers, body = await _forward_buffered(gateway, target, service)
    except BaseException:
        # No final answer: free the key so the client's retry is forwarded again.
        await asyncio.shield(release_key(runtime, principal, key))
        raise
    if should_store(status_code):
        await complete_key(
            runtime, principal, key, status_code=status_code, headers=headers, body=body
        )
    else:
        await release_key(runtime, principal, key)
    return _buffered_response(status_code, headers, body)


async def _proxy(request: Request, service: str, upstream_path: str) -> Response:
    runtime, gateway = get_runtime_and_gateway(request)
    settings = gateway.settings
    base = settings.routes.get(service)
    if base is None:
        raise ServiceNotFound(f"No service is published at {API_PREFIX}/{service}.")
    if any(segment in (".", "..") for segment in upstream_path.split("/")):
        raise ServiceNotFound("Paths with dot segments are not routed.")
    if upstream_path in OPERATIONS_PATHS:
        # Probes and metrics are for the platform's own network (request rates by route,
        # readiness of its dependencies), not for API clients.
        raise ServiceNotFound("A service's health and metrics endpoints are not published.")
    body = await _read_body(
        request, settings.max_body_bytes_by_service.get(service, settings.max_body_bytes)
    )
    query = request.url.query
    url = base.rstrip("/") + upstream_path + (f"?{query}" if query else "")
    client_ip = request.client.host if request.client else None
    forwarded = header_rules.request_headers(
        request.headers.items(),
        request_id=str(request.state.request_id),
        client_ip=client_ip,
        forwarded_proto=request.url.scheme,
        forwarded_host=request.headers.get("host"),
    )
    # Continue the server span when one is open, else the client's own trace context.
    current = trace.get_current_span().get_span_context()
    parent = None if current.is_valid else propagate.extract(dict(request.headers))
    with tracer.start_as_current_span(
        f"{request.method} {service}",
        context=parent,
        kind=trace.SpanKind.CLIENT,
        attributes={"http.request.method": request.method, "careloop.service": service},
    ):
        # The service continues the gateway's span, which continues the client's trace.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            forwarded = [(n, v) for n, v in forwarded if n not in ("traceparent", "tracestate")]
            forwarded.extend((n.lower(), v) for n, v in carrier.items())
        target = _Upstream(request.method, url, forwarded, body)
        return await _dispatch(request, runtime, gateway, target, service, upstream_path, body)


async def _dispatch(
    request: Request,
    runtime: Runtime,
    gateway: Gateway,
    target: _Upstream,
    service: str,
    upstream_path: str,
    body: bytes,
) -> Response:
    query = request.url.query
    key = request.headers.get("idempotency-key")
    if (
        request.method == "POST"
        and key is not None
        and not is_search(request.method, upstream_path)
    ):
        try:
            validate_key(key)
        except InvalidKey as exc:
            raise InvalidIdempotencyKey(str(exc)) from exc
        fingerprint = request_hash(
            request.method,
            f"{service}{upstream_path}?{query}",
            request.headers.get("content-type", ""),
            body,
        )
        return await _idempotent(
            request, runtime, gateway, target, service=service, key=key, fingerprint=fingerprint
        )
    return await _forward_streaming(gateway, target, service)


@router.api_route(
    API_PREFIX + "/{service}/{path:path}", methods=PROXY_METHODS, include_in_schema=False
)
async def proxy(request: Request, service: str, path: str) -> Response:
    """Forward a public API call to the service that owns it."""
    upstream_path = _upstream_path(request, service, path)
    admission = await admit(request, service, upstream_path)
    limit_headers = rate_headers(admission.decision)
    if admission.refusal is not None:
        return problem(request, admission.refusal, limit_headers)
    try:
        response = await _proxy(request, service, upstream_path)
    except ProblemError as error:
        return problem(request, error, limit_headers)
    response.headers.update(limit_headers)
    return response
