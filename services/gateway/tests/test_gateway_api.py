"""The gateway in front of the real patients service (its own process, real infrastructure)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from careloop_gateway.domain.openapi import iter_refs, resolve_ref
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import serve_in_task

from .conftest import GatewayFactory, bearer, new_patient

pytestmark = pytest.mark.service

PATIENTS = "/api/v1/patients/patients"


async def test_a_patient_is_registered_and_read_through_the_gateway(
    make_gateway: GatewayFactory, patients_url: str, org: dict[str, str], unique_id: str
) -> None:
    async with make_gateway(routes={"patients": patients_url}) as gateway:
        created = await gateway.post(PATIENTS, json=new_patient(unique_id), headers=org)
        assert created.status_code == 201, created.text
        patient = created.json()

        read = await gateway.get(f"{PATIENTS}/{patient['id']}", headers=org)
        found = await gateway.get(
            PATIENTS, params={"email": f"{unique_id}@example.org"}, headers=org
        )

    assert read.status_code == 200
    assert read.json() == patient
    assert [p["id"] for p in found.json()["items"]] == [patient["id"]]
    assert read.headers["ratelimit-limit"] == "100"
    assert int(read.headers["ratelimit-remaining"]) >= 0


async def test_the_request_id_is_forwarded_and_echoed_once(
    make_gateway: GatewayFactory, unique_id: str
) -> None:
    seen: dict[str, Any] = {}

    async def echo(request: Request) -> JSONResponse:
        seen.update(request.headers)
        seen["path"] = request.url.path
        seen["query"] = request.url.query
        return JSONResponse({"ok": True}, headers={"X-Request-Id": "upstream-own"})

    upstream = Starlette(routes=[Route("/{rest:path}", echo, methods=["GET"])])
    async with serve_in_task(upstream) as url, make_gateway(routes={"echo": url}) as gateway:
        given = await gateway.get(
            "/api/v1/echo/a/b%20c",
            params={"q": "1"},
            headers={
                "X-Request-Id": f"req-{unique_id}",
                "Idempotency-Key": "not-forwarded",
                "X-Internal": "not-forwarded",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
        )
        generated = await gateway.get("/api/v1/echo/x")

    assert given.status_code == 200
    assert given.headers.get_list("x-request-id") == [f"req-{unique_id}"]
    assert seen["x-request-id"] != ""
    assert generated.headers["x-request-id"] == seen["x-request-id"]
    assert seen["path"] == "/x"
    assert "idempotency-key" not in seen
    assert "x-internal" not in seen
    assert seen["x-forwarded-for"] == "127.0.0.1"


async def test_the_path_and_query_reach_the_upstream(make_gateway: GatewayFactory) -> None:
    seen: dict[str, Any] = {}

    async def echo(request: Request) -> JSONResponse:
        seen["path"] = request.url.path
        seen["query"] = request.url.query
        seen["traceparent"] = request.headers.get("traceparent")
        return JSONResponse({})

    upstream = Starlette(routes=[Route("/{rest:path}", echo, methods=["GET"])])
    async with serve_in_task(upstream) as url, make_gateway(routes={"echo": url}) as gateway:
        response = await gateway.get(
            "/api/v1/echo/a/b%20c?q=1&q=2",
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )

    assert response.status_code == 200
    assert seen["path"] == "/a/b c"
    assert seen["query"] == "q=1&q=2"
    # Same trace, continued by the gateway's own span.
    assert seen["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


async def test_an_unknown_service_is_a_404_problem(make_gateway: GatewayFactory) -> None:
    async with make_gateway(routes={}) as gateway:
        response = await gateway.get("/api/v1/nowhere/things")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unknown-service")


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_a_services_probes_and_metrics_are_not_published(
    make_gateway: GatewayFactory, org: dict[str, str], path: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with make_gateway(routes={"patients": down}) as gateway:
        response = await gateway.get(f"/api/v1/patients{path}", headers=org)

    # Refused before any upstream is called: an unreachable upstream would be a 502.
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_unreachable_service_is_a_502_problem(make_gateway: GatewayFactory) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with make_gateway(routes={"patients": down}) as gateway:
        response = await gateway.get(PATIENTS)

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 502


async def test_a_slow_service_is_a_504_problem(make_gateway: GatewayFactory) -> None:
    async def slow(request: Request) -> JSONResponse:
        await asyncio.sleep(3)
        return JSONResponse({})

    upstream = Starlette(routes=[Route("/slow", slow)])
    async with (
        serve_in_task(upstream) as url,
        make_gateway(routes={"slow": url}, upstream_timeout_s=0.3) as gateway,
    ):
        response = await gateway.get("/api/v1/slow/slow")

    assert response.status_code == 504
    assert response.json()["type"].endswith("/upstream-timeout")


async def test_a_body_over_the_limit_is_a_413_problem(
    make_gateway: GatewayFactory, patients_url: str, org: dict[str, str]
) -> None:
    async with make_gateway(routes={"patients": patients_url}, max_body_bytes=1000) as gateway:
        declared = await gateway.post(PATIENTS, content=b"x" * 1001, headers=org)

        async def chunks() -> Any:
            for _ in range(5):
                yield b"y" * 300

        streamed = await gateway.post(PATIENTS, content=chunks(), headers=org)

    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"
    assert streamed.status_code == 413


async def test_a_service_with_its_own_body_limit_takes_more_than_the_default(
    make_gateway: GatewayFactory,
) -> None:
    received: list[int] = []

    async def upload(request: Request) -> JSONResponse:
        received.append(len(await request.body()))
        return JSONResponse({}, status_code=201)

    upstream = Starlette(routes=[Route("/packets", upload, methods=["POST"])])
    body = b"p" * 3000
    async with (
        serve_in_task(upstream) as url,
        make_gateway(
            routes={"referrals": url, "other": url},
            max_body_bytes=1000,
            max_body_bytes_by_service={"referrals": 4000},
        ) as gateway,
    ):
        packet = await gateway.post("/api/v1/referrals/packets", content=body)
        elsewhere = await gateway.post("/api/v1/other/packets", content=body)
        too_big = await gateway.post("/api/v1/referrals/packets", content=b"p" * 4001)

    assert packet.status_code == 201
    assert received == [3000]
    assert elsewhere.status_code == 413
    assert "1000 bytes" in elsewhere.json()["detail"]
    assert too_big.status_code == 413
    assert "4000 bytes" in too_big.json()["detail"]
    assert "CARELOOP_MAX_BODY_BYTES_BY_SERVICE" in too_big.json()["detail"]


async def test_over_the_rate_limit_is_a_429_problem_with_retry_after(
    make_gateway: GatewayFactory,
    patients_url: str,
    org: dict[str, str],
    token_issuer: TestTokenIssuer,
) -> None:
    async with make_gateway(
        routes={"patients": patients_url}, rate_limit_per_minute=6, rate_limit_burst=2
    ) as gateway:
        statuses = []
        last = None
        for _ in range(3):
            last = await gateway.get(PATIENTS, params={"email": "no@example.org"}, headers=org)
            statuses.append(last.status_code)
        someone_else = bearer(token_issuer, "org-someone-else", "other-user")
        other = await gateway.get(
            PATIENTS, params={"email": "no@example.org"}, headers=someone_else
        )

    assert statuses == [200, 200, 429]
    assert last is not None
    assert last.headers["content-type"] == "application/problem+json"
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["ratelimit-limit"] == "2"
    assert last.headers["ratelimit-remaining"] == "0"
    assert other.status_code == 200


def echo_upstream() -> tuple[Starlette, list[str]]:
    """An upstream that answers 200 to anything and records which tokens reached it."""
    reached: list[str] = []

    async def anything(request: Request) -> JSONResponse:
        reached.append(request.headers.get("authorization", ""))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/{rest:path}", anything, methods=["GET"])]), reached


def partner(issuer: TestTokenIssuer, org_id: str, client_id: str, rl: int) -> dict[str, str]:
    """A partner client's token: scopes, no roles, its own rate limit `rl` (per minute)."""
    token = issuer.mint(
        org=org_id, sub=client_id, act="partner", roles=[], scope="patients:read", rl=rl
    )
    return {"Authorization": f"Bearer {token}"}


async def test_every_token_of_one_principal_shares_one_bucket(
    make_gateway: GatewayFactory, token_issuer: TestTokenIssuer, unique_id: str
) -> None:
    upstream, _ = echo_upstream()
    org_id = f"org-{unique_id}"
    # A new token per request: what a client refreshing (or minting) tokens would send.
    tokens = [bearer(token_issuer, org_id, "user-1") for _ in range(3)]
    async with (
        serve_in_task(upstream) as url,
        make_gateway(
            routes={"echo": url}, anonymous=True, rate_limit_per_minute=6, rate_limit_burst=2
        ) as gateway,
    ):
        answers = [await gateway.get("/api/v1/echo/x", headers=t) for t in tokens]
        colleague = await gateway.get(
            "/api/v1/echo/x", headers=bearer(token_issuer, org_id, "user-2")
        )
        namesake = await gateway.get(
            "/api/v1/echo/x", headers=bearer(token_issuer, f"{org_id}-b", "user-1")
        )

    assert len({t["Authorization"] for t in tokens}) == 3
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/rate-limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "2"
    # Another subject of the tenant, and the same subject in another tenant, are others.
    assert colleague.status_code == 200
    assert namesake.status_code == 200


async def test_a_partner_token_sets_its_own_limit_and_others_keep_the_default(
    make_gateway: GatewayFactory, token_issuer: TestTokenIssuer, unique_id: str
) -> None:
    upstream, reached = echo_upstream()
    org_id = f"org-{unique_id}"
    client = partner(token_issuer, org_id, "client-1", rl=5)
    async with (
        serve_in_task(upstream) as url,
        # Burst equal to the rate, so a partner's burst equals its `rl`.
        make_gateway(
            routes={"echo": url}, anonymous=True, rate_limit_per_minute=60, rate_limit_burst=60
        ) as gateway,
    ):
        answers = [await gateway.get("/api/v1/echo/x", headers=client) for _ in range(6)]
        # Minting another token does not buy a fresh budget, nor does another client
        # address: the bucket is the partner's.
        second = partner(token_issuer, org_id, "client-1", rl=5)
        elsewhere = await gateway.from_address("198.51.100.20").get(
            "/api/v1/echo/x", headers=second
        )
        other_partner = await gateway.get(
            "/api/v1/echo/x", headers=partner(token_issuer, org_id, "client-2", rl=50)
        )
        staff = await gateway.get("/api/v1/echo/x", headers=bearer(token_issuer, org_id, "u-1"))
        # Identity raised the client's limit: the next token's `rl` applies at once,
        # to the same (still empty) bucket.
        raised = await gateway.get(
            "/api/v1/echo/x", headers=partner(token_issuer, org_id, "client-1", rl=30)
        )

    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert {a.headers["ratelimit-limit"] for a in answers} == {"5"}
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    assert answers[-1].headers["content-type"] == "application/problem+json"
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert (elsewhere.status_code, elsewhere.headers["ratelimit-limit"]) == (429, "5")
    assert (other_partner.status_code, other_partner.headers["ratelimit-limit"]) == (200, "50")
    assert (staff.status_code, staff.headers["ratelimit-limit"]) == (200, "60")
    assert (raised.status_code, raised.headers["ratelimit-limit"]) == (429, "30")
    assert len(reached) == 7


async def test_bad_tokens_are_limited_per_address_before_verification(
    make_gateway: GatewayFactory,
    token_issuer: TestTokenIssuer,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream, reached = echo_upstream()
    org_id = f"org-{unique_id}"
    valid = bearer(token_issuer, org_id, "user-1")
    expired = {"Authorization": f"Bearer {token_issuer.mint(exp=1, iat=0, nbf=0)}"}
    forged = {"Authorization": "Bearer not.a.token"}
    async with (
        serve_in_task(upstream) as url,
        make_gateway(
            routes={"echo": url}, anonymous=True, rate_limit_per_minute=6, rate_limit_burst=3
        ) as gateway,
    ):
        verifier = gateway.app.state.runtime.state["token_verifier"]
        verify = verifier.verify
        verified: list[str] = []

        async def counting(token: str) -> Any:
            verified.append(token)
            return await verify(token)

        monkeypatch.setattr(verifier, "verify", counting)

        in_use = await gateway.get("/api/v1/echo/x", headers=valid)
        bad = [await gateway.get("/api/v1/echo/x", headers=h) for h in (forged, expired, forged)]
        checks_before_flood = len(verified)
        flood = [await gateway.get("/api/v1/echo/x", headers=forged) for _ in range(5)]
        checks_during_flood = len(verified) - checks_before_flood
        anonymous = await gateway.get("/api/v1/echo/x")
        # The principal's session keeps working from the same address, on its own budget.
        still_in_use = await gateway.get("/api/v1/echo/x", headers=valid)
        # A token never seen before is not verified while its address is over budget.
        unseen = await gateway.get("/api/v1/echo/x", headers=bearer(token_issuer, org_id, "u-2"))
        other_address = gateway.from_address("198.51.100.30")
        elsewhere_bad = await other_address.get("/api/v1/echo/x", headers=forged)
        elsewhere_new = await other_address.get(
            "/api/v1/echo/x", headers=bearer(token_issuer, org_id, "u-3")
        )

    assert in_use.status_code == 200
    assert [b.status_code for b in bad] == [401, 401, 401]
    for refused in bad:
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.headers["ratelimit-limit"] == "3"
    assert [b.headers["ratelimit-remaining"] for b in bad] == ["2", "1", "0"]
    assert {f.status_code for f in flood} == {429}
    assert flood[0].headers["content-type"] == "application/problem+json"
    assert int(flood[0].headers["retry-after"]) >= 1
    assert flood[0].headers["ratelimit-remaining"] == "0"
    assert checks_during_flood == 0  # refused without verifying anything
    assert anonymous.status_code == 429
    assert still_in_use.status_code == 200
    assert still_in_use.headers["ratelimit-remaining"] == "1"  # its own bucket of 3
    assert unseen.status_code == 429
    assert (elsewhere_bad.status_code, elsewhere_bad.headers["ratelimit-remaining"]) == (401, "2")
    assert elsewhere_new.status_code == 200
    newcomer = elsewhere_new.request.headers["authorization"]
    assert reached == [valid["Authorization"], valid["Authorization"], newcomer]


async def test_an_idempotent_post_is_applied_once_and_replayed(
    make_gateway: GatewayFactory, patients_url: str, org: dict[str, str], unique_id: str
) -> None:
    body = new_patient(unique_id)
    key = {"Idempotency-Key": f"key-{unique_id}"}
    async with make_gateway(routes={"patients": patients_url}) as gateway:
        first = await gateway.post(PATIENTS, json=body, headers={**org, **key})
        again = await gateway.post(PATIENTS, json=body, headers={**org, **key})
        changed = await gateway.post(
            PATIENTS, json=new_patient(unique_id + "z"), headers={**org, **key}
        )
        too_long = await gateway.post(
            PATIENTS, json=body, headers={**org, "Idempotency-Key": "k" * 256}
        )
        found = await gateway.get(
            PATIENTS, params={"email": f"{unique_id}@example.org"}, headers=org
        )

    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["content-type"] == first.headers["content-type"]
    assert changed.status_code == 422
    assert changed.json()["type"].endswith("/idempotency-key-reused")
    assert too_long.status_code == 400
    assert found.json()["count"] == 1


async def test_a_key_in_progress_is_a_409_and_5xx_answers_are_not_kept(
    make_gateway: GatewayFactory, unique_id: str
) -> None:
    calls: list[bytes] = []
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def create(request: Request) -> JSONResponse:
        calls.append(await request.body())
        arrived.set()
        if len(calls) == 1:
            await release.wait()
            return JSONResponse({"n": 1}, status_code=201)
        if len(calls) == 2:
            return JSONResponse({"error": "boom"}, status_code=503)
        return JSONResponse({"n": len(calls)}, status_code=201)

    upstream = Starlette(routes=[Route("/things", create, methods=["POST"])])
    headers = {"Idempotency-Key": "k1"}
    async with serve_in_task(upstream) as url, make_gateway(routes={"t": url}) as gateway:
        first = asyncio.create_task(gateway.post("/api/v1/t/things", json={}, headers=headers))
        await asyncio.wait_for(arrived.wait(), timeout=10)
        during = await gateway.post("/api/v1/t/things", json={}, headers=headers)
        release.set()
        assert (await first).status_code == 201

        key2 = {**headers, "Idempotency-Key": "k2"}
        failed = await gateway.post("/api/v1/t/things", json={}, headers=key2)
        retried = await gateway.post("/api/v1/t/things", json={}, headers=key2)
        replayed = await gateway.post("/api/v1/t/things", json={}, headers=key2)

    assert during.status_code == 409
    assert during.json()["type"].endswith("/idempotency-in-progress")
    assert failed.status_code == 503
    assert retried.status_code == 201
    assert retried.json() == {"n": 3}
    assert replayed.json() == {"n": 3}
    assert replayed.headers["idempotent-replayed"] == "true"
    assert len(calls) == 3


async def test_the_merged_openapi_document_covers_the_services_and_its_refs_resolve(
    make_gateway: GatewayFactory, patients_url: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with make_gateway(routes={"patients": patients_url, "audit": down}) as gateway:
        response = await gateway.get("/api/v1/openapi.json")
        docs = await gateway.get("/api/v1/docs")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "Careloop API"
    assert "/api/v1/patients/patients" in document["paths"]
    assert "/api/v1/patients/patients/{patient_id}" in document["paths"]
    assert document["x-careloop-unavailable"] == ["audit"]
    assert any(name.startswith("patients_") for name in document["components"]["schemas"])
    refs = list(iter_refs(document))
    assert refs
    for ref in refs:
        resolve_ref(document, ref)
    assert docs.status_code == 200
    assert "/api/v1/openapi.json" in docs.text
    json.dumps(document)


async def test_cors_headers_only_for_allowed_origins(make_gateway: GatewayFactory) -> None:
    async with make_gateway(routes={}, cors_allowed_origins=["https://app.example"]) as gateway:
        preflight = await gateway.options(
            "/api/v1/patients/patients",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
            },
        )
        foreign = await gateway.get("/healthz", headers={"Origin": "https://evil.example"})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in foreign.headers


async def test_no_cors_headers_by_default(make_gateway: GatewayFactory) -> None:
    async with make_gateway(routes={}) as gateway:
        response = await gateway.get("/healthz", headers={"Origin": "https://app.example"})

    assert "access-control-allow-origin" not in response.headers


async def test_requests_without_or_with_a_bad_token_stop_at_the_gateway(
    make_gateway: GatewayFactory, token_issuer: TestTokenIssuer
) -> None:
    reached: list[str] = []

    async def anything(request: Request) -> JSONResponse:
        reached.append(request.url.path)
        return JSONResponse({"ok": True})

    upstream = Starlette(routes=[Route("/{rest:path}", anything, methods=["GET", "POST"])])
    expired = token_issuer.mint(exp=1, iat=0, nbf=0)
    async with (
        serve_in_task(upstream) as url,
        make_gateway(routes={"patients": url, "identity": url}, anonymous=True) as gateway,
    ):
        missing = await gateway.get(PATIENTS)
        forged = await gateway.get(PATIENTS, headers={"Authorization": "Bearer not.a.token"})
        stale = await gateway.get(PATIENTS, headers={"Authorization": f"Bearer {expired}"})
        login = await gateway.post("/api/v1/identity/auth/login", json={})
        keys = await gateway.get("/api/v1/identity/.well-known/jwks.json")
        private = await gateway.get("/api/v1/identity/organizations-secret")
        basic = {"Authorization": "Basic Y2xpZW50OnNlY3JldA=="}
        client_token = await gateway.post(
            "/api/v1/identity/oauth/token", data={"grant_type": "client_credentials"}, headers=basic
        )
        basic_elsewhere = await gateway.get(PATIENTS, headers=basic)
        admin_area = await gateway.get("/api/v1/identity/organizations/org-1/users")

    for refused in (missing, forged, stale, private, basic_elsewhere, admin_area):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert "not.a.token" not in forged.text
    assert login.status_code == 200
    assert keys.status_code == 200
    # The token endpoint's own client authentication is the upstream's to check.
    assert client_token.status_code == 200
    assert reached == ["/auth/login", "/.well-known/jwks.json", "/oauth/token"]


async def test_only_secure_links_and_provider_callbacks_are_public_under_messaging(
    make_gateway: GatewayFactory,
) -> None:
    reached: list[tuple[str, str]] = []

    async def anything(request: Request) -> JSONResponse:
        reached.append((request.method, request.scope["raw_path"].decode()))
        return JSONResponse({"ok": True})

    upstream = Starlette(routes=[Route("/{rest:path}", anything, methods=["GET", "POST"])])
    token = "AVx3q_-9kLmN0pQrStUvWxYz0123456789abcdEF"
    async with (
        serve_in_task(upstream) as url,
        make_gateway(routes={"messaging": url, "patients": url}, anonymous=True) as gateway,
    ):
        page = await gateway.get(f"/api/v1/messaging/links/{token}")
        action = await gateway.post(f"/api/v1/messaging/links/{token}", data={"action": "confirm"})
        # Signed by Twilio, checked by messaging: the gateway lets exactly these two through.
        callbacks = [
            await gateway.post(f"/api/v1/messaging/webhooks/twilio/{kind}", data={"x": "1"})
            for kind in ("inbound", "status")
        ]
        refused = [
            await gateway.get(path)
            for path in (
                "/api/v1/messaging/links",
                "/api/v1/messaging/links/",
                f"/api/v1/messaging/links/{token}/more",
                f"/api/v1/messaging/links/{token}.html",
                "/api/v1/messaging/links/a%2F..%2Fwebhooks",
                "/api/v1/messaging/links/%2E%2E",
                "/api/v1/messaging/linksX/abc",
                "/api/v1/messaging/webhooks/twilio/other",
                "/api/v1/messaging/webhooks/twilio/inbound/x",
                "/api/v1/messaging/healthz",
                f"/api/v1/patients/links/{token}",
            )
        ]

    assert (page.status_code, action.status_code) == (200, 200)
    assert [c.status_code for c in callbacks] == [200, 200]
    assert reached == [
        ("GET", f"/links/{token}"),
        ("POST", f"/links/{token}"),
        ("POST", "/webhooks/twilio/inbound"),
        ("POST", "/webhooks/twilio/status"),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
