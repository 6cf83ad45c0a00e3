"""The read of one record from its owner with a service token: the body, a missing
record, one fresh token after a 401, and every other failure as `RecordUnavailable`
(the caller's retry path). The owner is an in-process HTTP handler; the tokens a stand-in
that counts what it was asked."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest

from careloop_kit.auth import ServiceTokenSource
from careloop_kit.record_reads import RecordReader, RecordUnavailable

URL = "http://owner.test/records/{id}"


class Tokens:
    service = "reader"

    def __init__(self) -> None:
        self.issued = 0
        self.forgotten: list[str] = []

    async def token(self, org: str, *, scope: str | None = None) -> str:
        self.issued += 1
        return f"token-{self.issued}"

    def forget(self, org: str) -> None:
        self.forgotten.append(org)


def _reader(handler: Any, tokens: Tokens) -> RecordReader:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return RecordReader(http, cast(ServiceTokenSource, tokens), url_template=URL)


async def test_the_body_of_a_record_and_none_for_a_missing_one() -> None:
    seen: list[tuple[str, str | None]] = []

    def owner(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization")))
        if request.url.path.endswith("/rec-1"):
            return httpx.Response(200, json={"id": "rec-1"})
        return httpx.Response(404, json={})

    reader = _reader(owner, Tokens())
    assert await reader.read("org-1", "rec-1") == {"id": "rec-1"}
    assert await reader.read("org-1", "rec-2") is None
    assert seen[0] == ("/records/rec-1", "Bearer token-1")


async def test_a_refused_token_is_replaced_once() -> None:
    answers = iter([401, 200])

    def owner(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"id": "rec-1"})

    tokens = Tokens()
    assert await _reader(owner, tokens).read("org-1", "rec-1") == {"id": "rec-1"}
    assert (tokens.issued, tokens.forgotten) == (2, ["org-1"])

    def always_401(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    with pytest.raises(RecordUnavailable, match="answered 401"):
        await _reader(always_401, Tokens()).read("org-1", "rec-1")


async def test_failures_are_unavailable() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RecordUnavailable, match="answered 503"):
        await _reader(broken, Tokens()).read("org-1", "rec-1")
    with pytest.raises(RecordUnavailable, match="unreachable"):
        await _reader(unreachable, Tokens()).read("org-1", "rec-1")
    with pytest.raises(ValueError, match="id"):
        RecordReader(httpx.AsyncClient(), cast(ServiceTokenSource, Tokens()), url_template="x")
