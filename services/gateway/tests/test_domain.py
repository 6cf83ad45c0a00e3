"""Unit tests of the gateway's pure rules: token buckets, headers, idempotency, OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from careloop_gateway.domain.headers import request_headers, response_headers
from careloop_gateway.domain.idempotency import (
    InvalidKey,
    Outcome,
    RecordStatus,
    StoredRecord,
    decide,
    is_search,
    request_hash,
    should_store,
    validate_key,
)
from careloop_gateway.domain.openapi import iter_refs, merge_documents, resolve_ref
from careloop_gateway.domain.ratelimit import RateLimiter, VerifiedTokens

pytestmark = pytest.mark.unit


class TestTokenBucket:
    def test_a_burst_is_allowed_then_refused_with_a_whole_second_retry_after(self) -> None:
        limiter = RateLimiter(per_minute=60, burst=3)
        decisions = [limiter.take("alice", now=100.0) for _ in range(4)]

        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert decisions[-1].retry_after_s == 1
        assert all(d.limit == 3 for d in decisions)

    def test_tokens_refill_at_the_per_minute_rate(self) -> None:
        limiter = RateLimiter(per_minute=6, burst=1)
        assert limiter.take("alice", now=0.0).allowed
        refused = limiter.take("alice", now=1.0)
        assert not refused.allowed
        assert refused.retry_after_s == 9  # one token every 10 s, 9 s still to go

        assert not limiter.take("alice", now=9.5).allowed
        assert limiter.take("alice", now=10.0).allowed

    def test_refill_never_exceeds_the_burst(self) -> None:
        limiter = RateLimiter(per_minute=600, burst=2)
        limiter.take("alice", now=0.0)
        late = limiter.take("alice", now=10_000.0)
        assert late.remaining == 1

    def test_principals_have_separate_buckets(self) -> None:
        limiter = RateLimiter(per_minute=60, burst=1)
        assert limiter.take("alice", now=0.0).allowed
        assert not limiter.take("alice", now=0.0).allowed
        assert limiter.take("bob", now=0.0).allowed

    def test_memory_is_capped_by_dropping_the_least_recently_seen(self) -> None:
        limiter = RateLimiter(per_minute=60, burst=1, max_keys=2)
        limiter.take("a", now=0.0)
        limiter.take("b", now=0.0)
        limiter.take("a", now=0.0)
        limiter.take("c", now=0.0)
        assert len(limiter) == 2
        assert limiter.take("b", now=0.0).allowed  # b was dropped, starts full again
        assert not limiter.take("c", now=0.0).allowed

    def test_a_key_with_its_own_rate_gets_a_burst_in_the_default_proportion(self) -> None:
        limiter = RateLimiter(per_minute=600, burst=100)
        assert limiter.burst_for(600) == 100
        assert limiter.burst_for(60) == 10
        assert limiter.burst_for(5) == 1  # rounded up: never an unusable bucket
        assert limiter.burst_for(6000) == 1000

        decisions = [limiter.take("partner", now=0.0, per_minute=60) for _ in range(11)]
        assert [d.allowed for d in decisions] == [True] * 10 + [False]
        assert all(d.limit == 10 for d in decisions)
        assert decisions[-1].retry_after_s == 1  # one token a second at 60 per minute
        assert limiter.take("staff", now=0.0).limit == 100

    def test_a_changed_rate_applies_from_the_next_request_without_a_fresh_bucket(self) -> None:
        limiter = RateLimiter(per_minute=60, burst=60)
        for _ in range(5):
            assert limiter.take("partner", now=0.0, per_minute=5).allowed
        assert not limiter.take("partner", now=0.0, per_minute=5).allowed

        # A new token raises the limit: the bucket grows, but is not refilled at once.
        raised = limiter.take("partner", now=0.0, per_minute=30)
        assert (raised.allowed, raised.limit) == (False, 30)
        after_2s = limiter.take("partner", now=2.0, per_minute=30)
        assert after_2s.allowed  # refilling at 30 per minute now: one token per 2 s

        # Lowered again: what is left is cut down to the smaller bucket.
        limiter.take("partner", now=1000.0, per_minute=30)
        lowered = limiter.take("partner", now=1000.0, per_minute=2)
        assert (lowered.limit, lowered.remaining) == (2, 1)

    def test_peeking_spends_nothing_and_creates_no_bucket(self) -> None:
        limiter = RateLimiter(per_minute=60, burst=2)
        fresh = limiter.peek("ip:10.0.0.1", now=0.0)
        assert (fresh.allowed, fresh.limit, fresh.remaining) == (True, 2, 2)
        assert len(limiter) == 0

        limiter.take("ip:10.0.0.1", now=0.0)
        assert limiter.peek("ip:10.0.0.1", now=0.0).remaining == 1
        limiter.take("ip:10.0.0.1", now=0.0)
        empty = limiter.peek("ip:10.0.0.1", now=0.0)
        assert (empty.allowed, empty.remaining, empty.retry_after_s) == (False, 0, 1)
        assert limiter.peek("ip:10.0.0.1", now=1.0).allowed

    def test_a_rate_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            RateLimiter(per_minute=60, burst=1).take("k", now=0.0, per_minute=0)


class TestVerifiedTokens:
    def test_a_token_is_known_until_it_expires_or_is_forgotten(self) -> None:
        verified = VerifiedTokens()
        assert not verified.knows("token-a", now=0.0)
        verified.remember("token-a", expires_at=100.0)
        assert verified.knows("token-a", now=99.0)
        assert not verified.knows("token-a", now=100.0)
        assert not verified.knows("token-b", now=0.0)

        verified.forget("token-a")
        assert not verified.knows("token-a", now=0.0)

    def test_memory_is_capped_and_only_digests_are_held(self) -> None:
        verified = VerifiedTokens(max_tokens=2)
        for name in ("a", "b", "a", "c"):
            verified.remember(f"secret-{name}", expires_at=100.0)
        assert len(verified) == 2
        assert not verified.knows("secret-b", now=0.0)
        assert verified.knows("secret-a", now=0.0)
        assert "secret" not in repr(vars(verified))


class TestHeaders:
    def test_only_allowed_headers_go_upstream_with_request_id_and_forwarded_for(self) -> None:
        sent = request_headers(
            [
                ("Authorization", "Bearer t"),
                ("X-Organization-Id", "org-1"),
                ("Connection", "keep-alive, X-Secret"),
                ("Keep-Alive", "timeout=5"),
                ("X-Secret", "s"),
                ("Idempotency-Key", "k"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("traceparent", "00-abc-def-01"),
                ("Host", "api.example"),
            ],
            request_id="rid-1",
            client_ip="10.0.0.2",
            forwarded_proto="https",
            forwarded_host="api.example",
        )
        as_dict = dict(sent)
        assert as_dict["authorization"] == "Bearer t"
        assert as_dict["traceparent"] == "00-abc-def-01"
        assert as_dict["x-request-id"] == "rid-1"
        assert as_dict["x-forwarded-for"] == "10.0.0.1, 10.0.0.2"
        # The retired tenant header is not trusted by anyone any more: never forwarded.
        for dropped in (
            "connection",
            "keep-alive",
            "x-secret",
            "idempotency-key",
            "host",
            "x-organization-id",
        ):
            assert dropped not in as_dict

    def test_hop_by_hop_and_gateway_owned_headers_are_not_returned(self) -> None:
        returned = response_headers(
            [
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked"),
                ("X-Request-Id", "upstream"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ]
        )
        assert returned == [
            ("content-type", "application/json"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]


class TestIdempotency:
    def _record(self, status: RecordStatus, request_hash: str = "h") -> StoredRecord:
        return StoredRecord(
            principal_key="p",
            key="k",
            request_hash=request_hash,
            status=status,
            status_code=201,
            headers=[],
            body=b"{}",
            created_at=datetime.now(UTC),
            completed_at=None,
        )

    def test_the_same_request_is_replayed_once_completed(self) -> None:
        assert decide(self._record(RecordStatus.COMPLETED), "h") is Outcome.REPLAY

    def test_the_same_request_in_progress_is_a_conflict(self) -> None:
        assert decide(self._record(RecordStatus.IN_PROGRESS), "h") is Outcome.IN_PROGRESS

    def test_a_different_request_under_the_same_key_is_refused(self) -> None:
        assert decide(self._record(RecordStatus.COMPLETED), "other") is Outcome.MISMATCH
        assert decide(self._record(RecordStatus.IN_PROGRESS), "other") is Outcome.MISMATCH

    def test_keys_must_be_short_printable_and_non_empty(self) -> None:
        assert validate_key("a" * 255) == "a" * 255
        for bad in ("", "a" * 256, "caf\u00e9", "tab\there"):
            with pytest.raises(InvalidKey):
                validate_key(bad)

    def test_the_hash_covers_method_target_content_type_and_body(self) -> None:
        base = request_hash("POST", "patients/patients?", "application/json", b"{}")
        assert base == request_hash("post", "patients/patients?", "application/json", b"{}")
        assert base != request_hash("POST", "patients/other?", "application/json", b"{}")
        assert base != request_hash("POST", "patients/patients?", "text/plain", b"{}")
        assert base != request_hash("POST", "patients/patients?", "application/json", b"{ }")

    @pytest.mark.parametrize(
        ("status", "stored"), [(200, True), (201, True), (404, True), (422, True), (500, False)]
    )
    def test_only_2xx_and_4xx_answers_are_stored(self, status: int, stored: bool) -> None:
        assert should_store(status) is stored


def _service_doc(title: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "0.1.0"},
        "paths": {
            "/things": {
                "post": {
                    "operationId": "create_thing",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ThingCreate"}
                            }
                        }
                    },
                    "responses": {
                        "201": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Thing"}
                                }
                            }
                        },
                        "422": {"$ref": "#/components/responses/Invalid"},
                    },
                    "security": [{"bearer": []}],
                }
            }
        },
        "components": {
            "schemas": {
                "ThingCreate": {"type": "object"},
                "Thing": {
                    "oneOf": [{"$ref": "#/components/schemas/ThingCreate"}],
                    "discriminator": {
                        "propertyName": "kind",
                        "mapping": {"a": "#/components/schemas/ThingCreate"},
                    },
                },
            },
            "responses": {"Invalid": {"description": "invalid"}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class TestOpenApiMerge:
    def test_paths_are_prefixed_and_components_namespaced_per_service(self) -> None:
        merged = merge_documents(
            {"title": "Careloop API", "version": "v1"},
            {"patients": _service_doc("p"), "audit": _service_doc("a")},
            unavailable=["identity"],
        )

        assert merged["openapi"] == "3.1.0"
        assert merged["info"]["title"] == "Careloop API"
        assert set(merged["paths"]) == {"/api/v1/audit/things", "/api/v1/patients/things"}
        assert set(merged["components"]["schemas"]) == {
            "audit_Thing",
            "audit_ThingCreate",
            "patients_Thing",
            "patients_ThingCreate",
        }
        assert merged["x-careloop-unavailable"] == ["identity"]
        operation = merged["paths"]["/api/v1/patients/things"]["post"]
        assert operation["operationId"] == "patients_create_thing"
        assert operation["security"] == [{"patients_bearer": []}]
        assert operation["responses"]["201"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/patients_Thing"
        }
        mapping = merged["components"]["schemas"]["audit_Thing"]["discriminator"]["mapping"]
        assert mapping == {"a": "#/components/schemas/audit_ThingCreate"}

    def test_every_rewritten_ref_resolves(self) -> None:
        merged = merge_documents(
            {"title": "t", "version": "v"},
            {"patients": _service_doc("p"), "audit": _service_doc("a")},
        )
        refs = list(iter_refs(merged))
        assert len(refs) == 8
        for ref in refs:
            resolve_ref(merged, ref)

    def test_the_source_documents_are_not_modified(self) -> None:
        doc = _service_doc("p")
        merge_documents({"title": "t", "version": "v"}, {"patients": doc})
        assert doc == _service_doc("p")


@pytest.mark.parametrize(
    ("method", "path", "search"),
    [
        ("POST", "/patients/_search", True),
        ("post", "/patients/_search/", True),
        ("GET", "/patients/_search", False),
        ("POST", "/patients", False),
        ("POST", "/patients/_searches", False),
        ("POST", "/patients/p-1/merge", False),
    ],
)
def test_only_a_post_to_a_search_path_is_a_search(method: str, path: str, search: bool) -> None:
    assert is_search(method, path) is search
