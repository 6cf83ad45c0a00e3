"""Which headers cross the gateway, in each direction."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Request headers a service may see. An allow-list, so a client cannot smuggle
# X-Forwarded-* or any future internal header past the gateway; Idempotency-Key is
# consumed here and Host is set by the HTTP client for the upstream.
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "content-type",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-unmodified-since",
        "prefer",
        "traceparent",
        "tracestate",
        "user-agent",
    }
)

# Set by the gateway on the way back; an upstream value would be a duplicate.
GATEWAY_RESPONSE_HEADERS = frozenset(
    {
        "x-request-id",
        "ratelimit-limit",
        "ratelimit-remaining",
        "retry-after",
        "idempotent-replayed",
    }
)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def request_headers(
    headers: Iterable[tuple[str, str]],
    *,
    request_id: str,
    client_ip: str | None,
    forwarded_proto: str,
    forwarded_host: str | None,
) -> list[tuple[str, str]]:
    """The headers to send upstream: allowed ones plus request id and X-Forwarded-*."""
    items = list(headers)
    dropped = HOP_BY_HOP | _connection_tokens(items)
    out = [
        (name.lower(), value)
        for name, value in items
        if name.lower() in FORWARDED_REQUEST_HEADERS and name.lower() not in dropped
    ]
    prior = [value for name, value in items if name.lower() == "x-forwarded-for"]
    chain = [*prior, client_ip] if client_ip else prior
    if chain:
        out.append(("x-forwarded-for", ", ".join(chain)))
    out.append(("x-forwarded-proto", forwarded_proto))
    if forwarded_host:
        out.append(("x-forwarded-host", forwarded_host))
    out.append(("x-request-id", request_id))
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream response headers to return to the client."""
    items = list(headers)
    dropped = HOP_BY_HOP | _connection_tokens(items) | GATEWAY_RESPONSE_HEADERS
    return [(name.lower(), value) for name, value in items if name.lower() not in dropped]
