"""Steps no principal calls audit like every request: `StepContext.audited` names the
actor explicitly, records the entry's outcome (a refusal the step returns with commits
with what the step changed), and a refusal or failure the step raises in a transaction
of its own, in the entry's words when it gave some.

Real PostgreSQL: the audit records are the outbox rows the recorder stages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import MetaData, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_kit.audit import AUDIT_RECORDER_KEY, AuditEntry, AuditRecorder
from careloop_kit.auth import Principal
from careloop_kit.bus.outbox import Outbox
from careloop_kit.context import own_transaction
from careloop_kit.db import add_platform_tables, make_engine, make_sessionmaker
from careloop_kit.errors import Conflict, ProblemError

pytestmark = pytest.mark.service

tables = add_platform_tables(MetaData())
ORIGIN = {"request_id": "req-step-1", "source_ip": "203.0.113.9"}
NOBODY = Principal(actor_id="unknown", actor_type="user", org_id="org-step")
ACCOUNT = Principal(actor_id="user-7", actor_type="user", org_id="org-step")


class InvalidGrant(ProblemError):
    status, title, slug = 400, "Invalid grant", "invalid-grant"


@pytest.fixture
async def runtime(
    make_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[SimpleNamespace]:
    """What a step reaches of the service's runtime: its sessions and audit recorder."""
    engine = make_engine(await make_database("step_audit"))
    async with engine.begin() as connection:
        await connection.run_sync(tables.outbox.metadata.create_all)
    sessionmaker = make_sessionmaker(engine)
    recorder = AuditRecorder(Outbox(tables, service="identity"), sessionmaker)
    yield SimpleNamespace(sessionmaker=sessionmaker, state={AUDIT_RECORDER_KEY: recorder})
    await engine.dispose()


def sign_in() -> AuditEntry:
    return AuditEntry(action="create", resource_type="Session", phi_categories=[])


async def records(sessionmaker: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    async with sessionmaker() as session:
        rows = await session.execute(select(tables.outbox.c.payload).order_by(tables.outbox.c.id))
        return [json.loads(payload) for (payload,) in rows]


async def change(session: AsyncSession) -> None:
    """What the step changes besides its audit record (a row of a platform table stands
    in for a failed sign-in's counter)."""
    await session.execute(
        insert(tables.inbox).values(
            consumer_group="sign-in",
            event_id=str(uuid4()),
            event_type="attempt",
            processed_at=datetime.now(UTC),
        )
    )


async def changes(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(tables.inbox)) or 0)


async def test_a_refusal_the_step_returns_with_commits_with_its_change(
    runtime: SimpleNamespace,
) -> None:
    async with (
        own_transaction(runtime, **ORIGIN) as step,
        step.audited(NOBODY, sign_in()) as entry,
    ):
        await change(step.session)
        entry.refuse("401 unknown account")

    (record,) = await records(runtime.sessionmaker)
    assert (record["actor_id"], record["actor_type"], record["org_id"]) == (
        "unknown",
        "user",
        "org-step",
    )
    assert (record["outcome"], record["outcome_detail"]) == ("denied", "401 unknown account")
    assert (record["request_id"], record["source_ip"]) == ("req-step-1", "203.0.113.9")
    assert record["source_service"] == "identity"
    assert await changes(runtime.sessionmaker) == 1


async def test_success_records_the_entrys_words_and_what_it_learnt(
    runtime: SimpleNamespace,
) -> None:
    async with own_transaction(runtime, **ORIGIN) as step:
        entry = sign_in()
        entry.outcome_detail = "mfa activated"
        async with step.audited(ACCOUNT, entry):
            entry.resource_id = "session-1"

    (record,) = await records(runtime.sessionmaker)
    assert (record["actor_id"], record["outcome"]) == ("user-7", "success")
    assert (record["resource_id"], record["outcome_detail"]) == ("session-1", "mfa activated")


async def test_a_raised_refusal_is_recorded_apart_in_its_words_and_the_step_rolls_back(
    runtime: SimpleNamespace,
) -> None:
    async def exchange() -> None:
        async with (
            own_transaction(runtime, **ORIGIN) as step,
            step.audited(NOBODY, sign_in()) as entry,
        ):
            await change(step.session)
            entry.refuse("400 invalid_grant: the assertion was already used")
            raise InvalidGrant("already used")

    with pytest.raises(InvalidGrant):
        await exchange()

    (record,) = await records(runtime.sessionmaker)
    assert (record["outcome"], record["outcome_detail"]) == (
        "denied",
        "400 invalid_grant: the assertion was already used",
    )
    assert record["request_id"] == "req-step-1"
    assert await changes(runtime.sessionmaker) == 0


async def test_a_raised_problem_without_words_is_recorded_by_its_status(
    runtime: SimpleNamespace,
) -> None:
    async def create() -> None:
        async with own_transaction(runtime) as step, step.audited(ACCOUNT, sign_in()):
            raise Conflict("taken")

    with pytest.raises(Conflict):
        await create()

    (record,) = await records(runtime.sessionmaker)
    assert (record["outcome"], record["outcome_detail"]) == ("error", "409")
    assert (record["request_id"], record["source_ip"]) == (None, None)
