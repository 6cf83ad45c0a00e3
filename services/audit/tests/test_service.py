"""The audit service against real PostgreSQL, Kafka and OpenBao.

One app runs for the module (start-up is the slow part). Tamper tests wait until the
log is quiet and covered by a checkpoint, tamper as the database superuser with
triggers bypassed, check what the verifier says, and put everything back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import careloop_audit
from careloop_audit.app import create_app
from careloop_audit.domain.checkpoint import Checkpoint
from careloop_audit.domain.hashing import ZERO_HASH
from careloop_audit.domain.record import RecordFields
from careloop_audit.domain.verify import seal
from careloop_audit.settings import AuditSettings
from careloop_audit.store.checkpoints import CheckpointStore
from careloop_audit.usecases.verification import verify_trail
from careloop_contracts import AccessRecorded, Envelope, to_headers
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.service import Runtime
from careloop_kit.vault import Vault

pytestmark = pytest.mark.service

MIGRATIONS = Path(careloop_audit.__file__).parent / "migrations"
T = TypeVar("T")


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    producer: AIOKafkaProducer
    settings: AuditSettings
    admin: AsyncEngine
    org_id: str
    issuer: TestTokenIssuer

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def headers(self, actor: str = "auditor-1", **claims: Any) -> dict[str, str]:
        """A bearer token of an auditor of this organization (override any claim)."""
        values: dict[str, Any] = {
            "org": self.org_id,
            "sub": actor,
            "roles": ["auditor"],
            "loc": [],
            "amr": ["pwd"],
        }
        values.update(claims)
        return {"Authorization": f"Bearer {self.issuer.mint(**values)}"}

    async def publish(self, event: AccessRecorded, *, source: str = "patients") -> None:
        envelope = Envelope.for_event(event, source=f"/careloop/{source}", time=datetime.now(UTC))
        await self.producer.send_and_wait(
            f"{self.settings.topic_prefix}careloop.{source}",
            value=event.to_json(),
            key=event.partition_key().encode(),
            headers=to_headers(envelope),
        )

    async def verify(self) -> dict[str, Any]:
        response = await self.client.post("/audit/verify", headers=self.headers())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def eventually(probe: Callable[[], Awaitable[T | None]], within_s: float = 30.0) -> T:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        value = await probe()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


def access(org_id: str, patient_id: str | None, actor_id: str, **changes: Any) -> AccessRecorded:
    values: dict[str, Any] = {
        "audit_id": uuid.uuid4(),
        "occurred_at": datetime.now(UTC),
        "org_id": org_id,
        "actor_id": actor_id,
        "actor_type": "user",
        "action": "read",
        "outcome": "success",
        "patient_id": patient_id,
        "resource_type": "Patient",
        "resource_id": patient_id,
        "phi_categories": ("demographics",),
        "source_service": "patients",
        "request_id": f"req-{uuid.uuid4().hex[:8]}",
    }
    values.update(changes)
    return AccessRecorded(**values)


@pytest.fixture(scope="module")
async def audit(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
) -> AsyncIterator[Harness]:
    unique = uuid.uuid4().hex[:10]
    name, password = f"audit_{unique}", uuid.uuid4().hex
    await postgres_server.create_database(name, owner=name, password=password)
    dsn = postgres_server.dsn_for(name, name, password)
    await upgrade_async(MIGRATIONS, dsn)
    settings = AuditSettings(
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["audit"],
        topic_prefix=f"t{unique}.",
        environment="test",
        checkpoint_interval_s=0.5,
        log_json=False,
        database_pool_size=4,
    )
    issuer = TestTokenIssuer(SystemClock())
    app = create_app(settings, jwks=StaticJwksSource(issuer.jwks_document()))
    admin = create_async_engine(postgres_server.admin_dsn(name))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://audit"
            ) as client,
        ):
            yield Harness(
                app, client, producer, settings, admin, org_id=f"org-{unique}", issuer=issuer
            )
    finally:
        await producer.stop()
        await admin.dispose()


@asynccontextmanager
async def superuser(harness: Harness) -> AsyncIterator[AsyncConnection]:
    async with harness.admin.begin() as conn:
        # Triggers do not fire for a replica session: only a superuser can do this.
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


async def quiet_and_checkpointed(harness: Harness) -> dict[str, Any]:
    """Wait until every record is in the log, verified and covered by a checkpoint."""

    async def probe() -> dict[str, Any] | None:
        report = await harness.verify()
        checkpoint = report["checkpoint"]
        if not report["ok"] or checkpoint is None:
            return None
        async with harness.runtime.sessionmaker() as session:
            unsent = await session.scalar(
                text("SELECT count(*) FROM outbox_message WHERE sent_at IS NULL")
            )
        if unsent or checkpoint["tree_size"] != report["records_checked"]:
            return None
        # Still the same a moment later: nothing in flight on the bus.
        await asyncio.sleep(0.7)
        again = await harness.verify()
        return report if again == report else None

    return await eventually(probe, within_s=40)


async def fetch_row(conn: AsyncConnection, seq: int) -> dict[str, Any]:
    row = (await conn.execute(text("SELECT * FROM audit_record WHERE seq = :s"), {"s": seq})).one()
    return dict(row._mapping)


async def insert_row(conn: AsyncConnection, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    params = ", ".join(f"CAST(:{k} AS JSONB)" if k == "phi_categories" else f":{k}" for k in row)
    values = dict(row)
    values["phi_categories"] = json.dumps(row["phi_categories"])
    await conn.execute(text(f"INSERT INTO audit_record ({columns}) VALUES ({params})"), values)


# -- the trail


async def test_access_records_join_the_log_and_answer_the_trail(audit: Harness) -> None:
    patient = f"pat-{uuid.uuid4().hex[:8]}"
    events = [
        access(audit.org_id, patient, "dr-a"),
        access(audit.org_id, patient, "dr-b", action="update", phi_categories=("contact",)),
        access(audit.org_id, patient, "dr-a", outcome="denied", outcome_detail="403"),
    ]
    for event in events:
        await audit.publish(event)
    # The same access again under a new event id: logged once (audit_id decides).
    await audit.publish(events[0])
    # Another organization's access to a patient with the same id is not ours to see.
    await audit.publish(access("org-other", patient, "dr-x"))

    async def three_patient_records() -> list[dict[str, Any]] | None:
        response = await audit.client.get(
            f"/audit/patients/{patient}/trail", headers=audit.headers()
        )
        assert response.status_code == 200, response.text
        items = [i for i in response.json()["items"] if i["resource_type"] == "Patient"]
        return items if len(items) >= 3 else None

    items = await eventually(three_patient_records)
    assert len(items) == 3
    assert [i["audit_id"] for i in items] == [str(e.audit_id) for e in reversed(events)]
    assert [i["seq"] for i in items] == sorted((i["seq"] for i in items), reverse=True)
    assert items[0]["outcome"] == "denied"
    assert items[1]["phi_categories"] == ["contact"]

    # Paging: newest first, the cursor continues where the page ended.
    first = (
        await audit.client.get(
            f"/audit/patients/{patient}/trail", params={"limit": 1}, headers=audit.headers()
        )
    ).json()
    assert first["next_cursor"] is not None
    second = (
        await audit.client.get(
            f"/audit/patients/{patient}/trail",
            params={"limit": 1, "cursor": first["next_cursor"]},
            headers=audit.headers(),
        )
    ).json()
    assert second["items"][0]["seq"] < first["items"][0]["seq"]

    # Reading the trail is itself audited and lands in the same log.
    async def trail_reads() -> list[dict[str, Any]] | None:
        response = await audit.client.get(
            f"/audit/patients/{patient}/trail", headers=audit.headers("privacy-officer")
        )
        reads = [
            i
            for i in response.json()["items"]
            if i["resource_type"] == "AuditEvent" and i["actor_id"] == "privacy-officer"
        ]
        return reads or None

    reads = await eventually(trail_reads)
    assert reads[0]["source_service"] == "audit"
    # The actor is the token's `sub`, its type the token's `act`.
    assert reads[0]["actor_id"] == "privacy-officer"
    assert reads[0]["actor_type"] == "user"
    assert reads[0]["action"] == "read"
    assert reads[0]["patient_id"] == patient


async def test_query_by_actor_and_time_range(audit: Harness) -> None:
    actor = f"dr-{uuid.uuid4().hex[:8]}"
    early = datetime.now(UTC) - timedelta(hours=2)
    await audit.publish(access(audit.org_id, "pat-q1", actor, occurred_at=early))
    await audit.publish(access(audit.org_id, "pat-q2", actor))

    async def both() -> list[dict[str, Any]] | None:
        response = await audit.client.get(
            "/audit/events", params={"actor_id": actor}, headers=audit.headers()
        )
        items: list[dict[str, Any]] = response.json()["items"]
        return items if len(items) == 2 else None

    await eventually(both)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    response = await audit.client.get(
        "/audit/events", params={"actor_id": actor, "since": since}, headers=audit.headers()
    )
    assert [i["patient_id"] for i in response.json()["items"]] == ["pat-q2"]

    bad = await audit.client.get(
        "/audit/events",
        params={"since": since, "until": (datetime.now(UTC) - timedelta(hours=3)).isoformat()},
        headers=audit.headers(),
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


async def test_a_record_exports_as_a_fhir_audit_event(audit: Harness) -> None:
    event = access(audit.org_id, "pat-fhir", "dr-f", action="create", source_ip="10.9.8.7")
    await audit.publish(event)

    async def exported() -> dict[str, Any] | None:
        response = await audit.client.get(
            f"/audit/events/{event.audit_id}/fhir", headers=audit.headers()
        )
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    resource = await eventually(exported)
    assert resource["resourceType"] == "AuditEvent"
    assert resource["id"] == str(event.audit_id)
    assert resource["subtype"][0]["code"] == "create"
    assert resource["action"] == "C"
    assert resource["outcome"] == "0"
    assert resource["entity"][0]["what"]["reference"] == "Patient/pat-fhir"
    assert resource["agent"][0]["who"]["identifier"]["value"] == "dr-f"

    other_org = audit.headers("x", org="org-nobody")
    missing = await audit.client.get(f"/audit/events/{event.audit_id}/fhir", headers=other_org)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


ENDPOINTS = [
    ("GET", "/audit/patients/pat-1/trail"),
    ("GET", "/audit/events"),
    ("GET", "/audit/events/00000000-0000-0000-0000-000000000000/fhir"),
    ("POST", "/audit/verify"),
]


async def test_calls_without_a_token_are_refused(audit: Harness) -> None:
    for method, path in ENDPOINTS:
        response = await audit.client.request(method, path)
        assert response.status_code == 401, path
        assert response.json()["type"].endswith("/unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    legacy = await audit.client.get(
        "/audit/events", headers={"X-Organization-Id": audit.org_id, "X-Actor-Id": "a"}
    )
    assert legacy.status_code == 401


async def test_only_auditors_and_org_admins_with_mfa_read_the_log(audit: Harness) -> None:
    for role in ("front_desk", "provider", "billing", "location_manager", "care_coordinator"):
        headers = audit.headers(roles=[role], loc=["*"], amr=["pwd", "otp"])
        for method, path in ENDPOINTS:
            response = await audit.client.request(method, path, headers=headers)
            assert response.status_code == 403, (role, path)
    patient = audit.headers(act="patient", roles=["patient"], pat="pat-1")
    for method, path in ENDPOINTS:
        assert (await audit.client.request(method, path, headers=patient)).status_code == 403

    no_mfa = audit.headers("admin-1", roles=["org_admin"], loc=["*"], amr=["pwd"])
    refused = await audit.client.get("/audit/events", headers=no_mfa)
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("multi-factor authentication required")

    with_mfa = audit.headers("admin-1", roles=["org_admin"], loc=["*"], amr=["pwd", "otp"])
    assert (await audit.client.get("/audit/events", headers=with_mfa)).status_code == 200
    assert (await audit.client.get("/audit/events", headers=audit.headers())).status_code == 200


# -- append-only and tamper evidence


async def test_the_app_role_cannot_change_or_remove_records(audit: Harness) -> None:
    await audit.publish(access(audit.org_id, "pat-ro", "dr-ro"))
    await quiet_and_checkpointed(audit)
    for statement in (
        "UPDATE audit_record SET actor_id = 'someone-else'",
        "DELETE FROM audit_record",
        "TRUNCATE audit_record",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with audit.runtime.engine.begin() as conn:
                await conn.execute(text(statement))
    assert (await audit.verify())["ok"]


async def test_an_edited_field_is_named_by_its_seq(audit: Harness) -> None:
    report = await quiet_and_checkpointed(audit)
    seq = max(2, report["records_checked"] // 2)
    async with superuser(audit) as conn:
        original = (await fetch_row(conn, seq))["actor_id"]
        await conn.execute(
            text("UPDATE audit_record SET actor_id = 'cover-up' WHERE seq = :s"), {"s": seq}
        )
    try:
        tampered = await audit.verify()
        assert tampered["ok"] is False
        assert tampered["first_bad_seq"] == seq
        assert tampered["reason"].startswith("edited")
    finally:
        async with superuser(audit) as conn:
            await conn.execute(
                text("UPDATE audit_record SET actor_id = :a WHERE seq = :s"),
                {"a": original, "s": seq},
            )
    assert (await audit.verify())["ok"]


async def test_a_deleted_record_is_detected(audit: Harness) -> None:
    report = await quiet_and_checkpointed(audit)
    seq = max(2, report["records_checked"] // 2)
    async with superuser(audit) as conn:
        row = await fetch_row(conn, seq)
        await conn.execute(text("DELETE FROM audit_record WHERE seq = :s"), {"s": seq})
    try:
        tampered = await audit.verify()
        assert (tampered["ok"], tampered["first_bad_seq"]) == (False, seq)
        assert tampered["reason"].startswith("seq gap")
    finally:
        async with superuser(audit) as conn:
            await insert_row(conn, row)
    assert (await audit.verify())["ok"]


async def test_swapped_records_are_detected(audit: Harness) -> None:
    report = await quiet_and_checkpointed(audit)
    seq = max(1, report["records_checked"] // 2)
    swap = [(seq, -1), (seq + 1, seq), (-1, seq + 1)]

    async def do_swap() -> None:
        async with superuser(audit) as conn:
            for old, new in swap:
                await conn.execute(
                    text("UPDATE audit_record SET seq = :n WHERE seq = :o"), {"n": new, "o": old}
                )

    await do_swap()
    try:
        tampered = await audit.verify()
        assert (tampered["ok"], tampered["first_bad_seq"]) == (False, seq)
    finally:
        await do_swap()  # the same three moves swap them back
    assert (await audit.verify())["ok"]


async def test_a_truncated_tail_is_caught_by_the_signed_checkpoint(audit: Harness) -> None:
    report = await quiet_and_checkpointed(audit)
    size = report["records_checked"]
    assert report["checkpoint"]["tree_size"] == size
    keep = size - 2
    async with superuser(audit) as conn:
        tail = [await fetch_row(conn, s) for s in (size - 1, size)]
        head = (await conn.execute(text("SELECT * FROM audit_chain_head"))).one()
        keep_hash = (await fetch_row(conn, keep))["chain_hash"]
        await conn.execute(text("DELETE FROM audit_record WHERE seq > :k"), {"k": keep})
        # A careful intruder rewinds the head too, so the chain alone looks intact.
        await conn.execute(
            text("UPDATE audit_chain_head SET last_seq = :k, last_chain_hash = :h"),
            {"k": keep, "h": keep_hash},
        )
    try:
        tampered = await audit.verify()
        assert tampered["ok"] is False
        assert tampered["reason"] == f"truncated: log has {keep} records, checkpoint at size {size}"
        assert tampered["first_bad_seq"] == keep + 1
    finally:
        async with superuser(audit) as conn:
            for row in tail:
                await insert_row(conn, row)
            await conn.execute(
                text("UPDATE audit_chain_head SET last_seq = :k, last_chain_hash = :h"),
                {"k": head.last_seq, "h": head.last_chain_hash},
            )
    assert (await audit.verify())["ok"]


async def test_a_consistent_rewrite_is_caught_by_the_checkpoint_root(audit: Harness) -> None:
    report = await quiet_and_checkpointed(audit)
    size = report["records_checked"]
    async with superuser(audit) as conn:
        originals = [await fetch_row(conn, s) for s in range(1, size + 1)]
        head = (await conn.execute(text("SELECT * FROM audit_chain_head"))).one()
        previous = ZERO_HASH
        for row in originals:
            fields = RecordFields(
                **{k: row[k] for k in RecordFields.__dataclass_fields__}
                | {"phi_categories": tuple(row["phi_categories"])}
            )
            if row["seq"] == 1:
                fields = replace(fields, outcome="denied")
            forged = seal(fields, previous)
            previous = forged.chain_hash
            await conn.execute(
                text(
                    "UPDATE audit_record SET outcome = :o, canonical = :c, leaf_hash = :l, "
                    "chain_hash = :h WHERE seq = :s"
                ),
                {
                    "o": fields.outcome,
                    "c": forged.canonical,
                    "l": forged.leaf_hash,
                    "h": forged.chain_hash,
                    "s": row["seq"],
                },
            )
        await conn.execute(
            text("UPDATE audit_chain_head SET last_chain_hash = :h"), {"h": previous}
        )
    try:
        tampered = await audit.verify()
        assert tampered["ok"] is False
        assert tampered["reason"].startswith("rewritten: root mismatch")
    finally:
        async with superuser(audit) as conn:
            await conn.execute(text("DELETE FROM audit_record"))
            for row in originals:
                await insert_row(conn, row)
            await conn.execute(
                text("UPDATE audit_chain_head SET last_chain_hash = :h"),
                {"h": head.last_chain_hash},
            )
    assert (await audit.verify())["ok"]


async def test_the_cli_entry_point_verifies_without_http(audit: Harness) -> None:
    report = await quiet_and_checkpointed(audit)
    direct = await verify_trail(audit.settings)
    assert direct.ok
    assert direct.records_checked == report["records_checked"]
    assert direct.checkpoint is not None
    assert direct.checkpoint.signature_valid


# -- the external anchor


async def test_forged_checkpoints_fail_signature_verification(
    kafka_bootstrap: str, vault_addr: str, vault_tokens: dict[str, str], topic_prefix: str
) -> None:
    settings = AuditSettings(
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["audit"],
        topic_prefix=topic_prefix,
        environment="test",
    )
    store = CheckpointStore(
        settings, Vault(vault_addr, vault_tokens["audit"]), key_name=settings.checkpoint_signing_key
    )
    assert await store.latest() is None  # no topic yet
    await store.ensure_topic()
    assert await store.latest() is None  # empty topic
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        genuine = await store.sign(3, "ab" * 32, datetime.now(UTC))
        await store.anchor(producer, genuine)
        assert await store.verify(genuine)
        latest = await store.latest()
        assert latest == genuine

        # Someone with write access to the topic re-anchors a larger, self-made root.
        fake_signature = "vault:v1:" + base64.b64encode(bytes(64)).decode()
        forged = Checkpoint(9, "cd" * 32, datetime.now(UTC), 1, fake_signature)
        await store.anchor(producer, forged)
        latest = await store.latest()
        assert latest is not None
        assert latest.tree_size == 9
        assert not await store.verify(latest)
        # A genuine signature does not carry over to another root.
        assert not await store.verify(replace(genuine, root_hash="cd" * 32))
        assert not await store.verify(replace(genuine, signature="not-a-signature"))
    finally:
        await producer.stop()
