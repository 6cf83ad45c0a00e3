from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from careloop_kit.auth import HttpJwksSource, JwksError, parse_jwks, public_jwk
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock

pytestmark = pytest.mark.unit

URL = "http://identity.test/.well-known/jwks.json"


def _source(clock: FrozenClock, documents: list[object]) -> tuple[HttpJwksSource, list[int]]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == URL
        calls.append(1)
        document = documents[min(len(calls), len(documents)) - 1]
        if isinstance(document, int):
            return httpx.Response(document)
        return httpx.Response(200, json=document)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return HttpJwksSource(URL, ttl_s=300, clock=clock, client=client), calls


async def test_http_source_caches_for_ttl_then_refetches() -> None:
    clock = FrozenClock()
    key = Ed25519PrivateKey.generate().public_key()
    source, calls = _source(clock, [{"keys": [public_jwk(key, "k1")]}])

    assert set(await source.keys()) == {"k1"}
    assert set(await source.keys()) == {"k1"}
    assert len(calls) == 1
    clock.advance(timedelta(seconds=301))
    await source.keys()
    assert len(calls) == 2
    await source.refresh()
    assert len(calls) == 3


async def test_http_source_keeps_last_good_keys_when_identity_is_down() -> None:
    clock = FrozenClock()
    key = Ed25519PrivateKey.generate().public_key()
    source, _ = _source(clock, [{"keys": [public_jwk(key, "k1")]}, 503])

    await source.keys()
    assert set(await source.refresh()) == {"k1"}


async def test_http_source_without_any_keys_raises() -> None:
    source, _ = _source(FrozenClock(), [503])

    with pytest.raises(JwksError):
        await source.keys()


async def test_verifier_over_http_source_rejects_when_jwks_unavailable() -> None:
    clock = FrozenClock()
    issuer = TestTokenIssuer(clock)
    source, _ = _source(clock, [500])
    issuer.jwks = source  # type: ignore[assignment]

    from careloop_kit.auth import InvalidToken

    with pytest.raises(InvalidToken, match="unavailable"):
        await issuer.verifier().verify(issuer.mint())


async def test_verifier_over_http_source_accepts_identity_tokens() -> None:
    clock = FrozenClock()
    issuer = TestTokenIssuer(clock)
    source, _ = _source(clock, [issuer.jwks_document()])
    issuer.jwks = source  # type: ignore[assignment]

    assert (await issuer.verifier().verify(issuer.mint())).sub == "user-1"


def test_parse_jwks_takes_only_ed25519_signing_keys() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    good = public_jwk(key, "good")
    document = {
        "keys": [
            good,
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "rs", "alg": "RS256"},
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": good["x"]},
            {**good, "kid": "short", "x": "AAAA"},
            {**good, "kid": "bad", "x": "!!"},
            {k: v for k, v in good.items() if k != "kid"},
            "junk",
        ]
    }

    assert set(parse_jwks(document)) == {"good"}


@pytest.mark.parametrize("document", [None, [], {"keys": "x"}, {}])
def test_parse_jwks_refuses_a_non_document(document: object) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)
