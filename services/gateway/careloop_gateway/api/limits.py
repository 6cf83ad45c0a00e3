"""Problem responses of the gateway, and the rate limits every public call passes.

Admission of a proxied request, in this order (`admit`):

1. **No `Authorization` header**: one token of the client address' bucket is spent
   (429 when it is empty); then a public route goes on, any other is refused with 401.
2. **A bearer token**, before it is verified: unless this exact token verified earlier
   and has not expired, the client address' bucket must still hold a token (429
   otherwise, without verifying anything). This keeps a flood of forged or stale
   tokens cheap to refuse; looking does not spend.
3. The token is verified (signature, claims, revocation). A bad token spends one token
   of the client address' bucket and is refused with 401, carrying that bucket's
   headers: bad tokens are limited per address, never charged to the principal they
   name, so they cannot drain a real principal's budget.
4. A valid token spends one token of its principal's bucket, keyed by tenant and
   subject (`sub:<org>:<sub>`): every token of one principal shares it, so neither a
   refreshed token nor a partner minting many gets a fresh budget. A partner token's
   `rl` claim (requests per minute, set by identity per partner client) sets that
   bucket's rate; everyone else has the configured default. 429 when it is empty.
5. Only then is the route resolved (404 for an unknown service still counts) and the
   request forwarded.

A valid principal is therefore never slowed by bad tokens, except that a token this
replica has not verified before waits while its client address is over budget
(step 2): behind a shared address, tokens already in use keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request, Response

from careloop_gateway.api.auth import is_public, missing_token, verify_token
from careloop_gateway.api.principal import address_key, principal_key
from careloop_gateway.api.state import get_runtime_and_gateway
from careloop_gateway.domain.ratelimit import RateDecision
from careloop_kit.auth.tokens import InvalidToken
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


def rate_limited(decision: RateDecision) -> RateLimited:
    """The 429 problem for a refused `decision`."""
    return RateLimited(
        f"Rate limit exceeded; retry after {decision.retry_after_s} seconds.",
        retry_after=decision.retry_after_s,
    )


def take_anonymous(request: Request) -> RateDecision:
    """Spend one request of the client address' budget (routes that check no token)."""
    runtime, gateway = get_runtime_and_gateway(request)
    return gateway.limiter.take(address_key(request), runtime.clock.now().timestamp())


@dataclass(frozen=True)
class Admission:
    """The bucket a request was charged to, and the refusal if it may not go on."""

    decision: RateDecision
    refusal: ProblemError | None = None


async def admit(request: Request, service: str, upstream_path: str) -> Admission:
    """Verify the caller and spend one request of its budget (order: module docstring)."""
    runtime, gateway = get_runtime_and_gateway(request)
    limiter = gateway.limiter
    now = runtime.clock.now().timestamp()
    address = address_key(request)
    authorization = request.headers.get("authorization")
    # A public route's own credential (HTTP Basic client authentication at the OAuth
    # token endpoint) is the upstream's to check, not an access token.
    if (
        authorization is not None
        and is_public(service, upstream_path)
        and authorization.partition(" ")[0].lower() != "bearer"
    ):
        authorization = None
    if authorization is None:
        decision = limiter.take(address, now)
        if not decision.allowed:
            return Admission(decision, rate_limited(decision))
        if not is_public(service, upstream_path):
            return Admission(decision, missing_token())
        return Admission(decision)

    if not gateway.verified.knows(authorization, now):
        gate = limiter.peek(address, now)
        if not gate.allowed:
            return Admission(gate, rate_limited(gate))
    try:
        claims = await verify_token(request)
    except InvalidToken as error:
        gateway.verified.forget(authorization)
        return Admission(limiter.take(address, now), error)
    gateway.verified.remember(authorization, claims.exp)
    decision = limiter.take(principal_key(request), now, per_minute=claims.rate_limit)
    if not decision.allowed:
        return Admission(decision, rate_limited(decision))
    return Admission(decision)


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
