"""The merged OpenAPI document of the public API: every routed service's document,
fetched and merged, cached for a short while."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from careloop_gateway.domain.openapi import merge_documents

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


@dataclass
class OpenApiCache:
    document: dict[str, Any] | None = None
    built_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _fetch(http: httpx.AsyncClient, base: str, wait_s: float) -> dict[str, Any] | None:
    try:
        response = await http.get(base.rstrip("/") + "/openapi.json", timeout=wait_s)
        document = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return document if isinstance(document, dict) and "paths" in document else None


async def build_document(
    http: httpx.AsyncClient, routes: Mapping[str, str], *, wait_s: float
) -> dict[str, Any]:
    """Fetch every service's document (waiting at most `wait_s` for each) and merge
    them; a service that is down is listed."""
    ordered = sorted(routes.items())
    fetched = await asyncio.gather(*(_fetch(http, base, wait_s) for _, base in ordered))
    documents = {name: doc for (name, _), doc in zip(ordered, fetched, strict=True) if doc}
    unavailable = [name for (name, _), doc in zip(ordered, fetched, strict=True) if not doc]
    return merge_documents(INFO, documents, unavailable)


async def merged_document(
    cache: OpenApiCache,
    http: httpx.AsyncClient,
    routes: Mapping[str, str],
    *,
    now: float,
    max_age_s: float,
    upstream_timeout_s: float,
) -> dict[str, Any]:
    """The cached document, built again once it is `max_age_s` old."""
    async with cache.lock:
        if cache.document is None or now - cache.built_at >= max_age_s:
            wait_s = min(FETCH_TIMEOUT_S, upstream_timeout_s)
            cache.document = await build_document(http, routes, wait_s=wait_s)
            cache.built_at = now
        return cache.document
