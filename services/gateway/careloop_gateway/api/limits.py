"""Problem responses of the gateway, and the rate limit every public call passes."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request, Response

from careloop_gateway.api.principal import principal_key
from careloop_gateway.api.state import get_runtime_and_gateway
from careloop_gateway.domain.ratelimit import RateDecision
from careloop_kit.problems import ProblemError, problem_response


class RateLimited(ProblemError):
    status, title, slug = 429, "Too many requests", "rate-limited"


class ServiceNotFound(ProblemError):
    status, title, slug = 404, "Not found", "unknown-service"


class PayloadTooLarge(ProblemError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UpstreamUnreachable(ProblemError):
    status, title, slug = 502, "Bad gateway", "upstream-unreachable"


class UpstreamTimeout(ProblemError):
    status, title, slug = 504, "Gateway timeout", "upstream-timeout"


class InvalidIdempotencyKey(ProblemError):
    status, title, slug = 400, "Invalid Idempotency-Key", "invalid-idempotency-key"


class IdempotencyInProgress(ProblemError):
    status, title, slug = 409, "Request in progress", "idempotency-in-progress"


class IdempotencyKeyReused(ProblemError):
    status, title, slug = 422, "Idempotency-Key reused", "idempotency-key-reused"


def rate_headers(decision: RateDecision) -> dict[str, str]:
    """The headers that publish a principal's limit on every response."""
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers


def take_token(request: Request) -> RateDecision:
    """Spend one request of the caller's budget."""
    runtime, gateway = get_runtime_and_gateway(request)
    return gateway.limiter.take(principal_key(request), runtime.clock.now().timestamp())


def problem(
    request: Request, error: ProblemError, headers: Mapping[str, str] | None = None
) -> Response:
    """A problem+json response for `error`, with extra headers."""
    response = problem_response(
        error.status, error.title, error.slug, error.detail, request.url.path, **error.extra
    )
    if headers:
        response.headers.update(headers)
    if error.status == 401:
        # RFC 6750: tell the client which scheme to use.
        response.headers["WWW-Authenticate"] = 'Bearer realm="careloop"'
    return response
