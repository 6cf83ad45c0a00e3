"""The operator commands against a running slice: `careloop audit verify` and `careloop dlq`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_kit.bus.dlq import list_dead_letters
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.settings import KitSettings

pytestmark = pytest.mark.e2e

TRAIL_GROUP = "careloop.audit.trail"


def careloop(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "careloop_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_audit_verify_command_passes_then_names_the_first_tampered_record(
    slice_apps: Any,
    register: Callable[[dict[str, object]], Awaitable[str]],
    postgres_server: PostgresServer,
) -> None:
    ids = [
        await register(
            {"name": {"family": "Synthetic", "given": [f"V{i}"]}, "birth_date": "1990-01-01"}
        )
        for i in range(3)
    ]
    for patient_id in ids:
        await slice_apps.wait_for_trail(patient_id, expected=1)
    for _ in range(100):
        report = (await slice_apps.audit.post("/audit/verify", headers=slice_apps.auditor)).json()
        if report["checkpoint"] and report["checkpoint"]["tree_size"] >= 3:
            break
        await asyncio.sleep(0.2)
    env = slice_apps.cli_env(slice_apps.audit_settings)

    clean = careloop(env, "audit", "verify", "--json")

    assert clean.returncode == 0, clean.stdout + clean.stderr
    verdict = json.loads(clean.stdout)
    assert verdict["ok"] is True
    assert verdict["records_checked"] >= 3
    assert verdict["checkpoint"]["signature_valid"] is True

    admin = create_async_engine(postgres_server.admin_dsn(slice_apps.audit_database))
    async with admin.begin() as connection:
        await connection.execute(text("SET LOCAL session_replication_role = replica"))
        await connection.execute(text("UPDATE audit_record SET actor_id = 'mallory' WHERE seq = 2"))
    await admin.dispose()

    tampered = careloop(env, "audit", "verify", "--json")

    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    verdict = json.loads(tampered.stdout)
    assert verdict["ok"] is False
    assert verdict["first_bad_seq"] == 2


async def test_dlq_commands_list_a_poison_event_and_replay_it(
    slice_apps: Any, kafka_bootstrap: str, topic_prefix: str
) -> None:
    event_id = str(uuid.uuid4())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{topic_prefix}careloop.patients",
            value=b'{"anything": 1}',
            key=b"patient-x",
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", event_id.encode()),
                ("ce_type", b"careloop.patients.patient.teleported.v1"),
                ("ce_source", b"/careloop/patients"),
                ("ce_time", datetime.now(UTC).isoformat().encode()),
                ("ce_orgid", b"org-x"),
            ],
        )
    finally:
        await producer.stop()
    settings = KitSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    for _ in range(100):
        if await list_dead_letters(settings, TRAIL_GROUP):
            break
        await asyncio.sleep(0.2)
    env = slice_apps.cli_env(slice_apps.audit_settings)

    listed = careloop(env, "dlq", "list", TRAIL_GROUP)
    replayed = careloop(env, "dlq", "replay", TRAIL_GROUP)
    replayed_again = careloop(env, "dlq", "replay", TRAIL_GROUP)

    assert listed.returncode == 0, listed.stderr
    assert event_id[:8] in listed.stdout
    assert "poison" in listed.stdout
    assert "replayed 1 record" in replayed.stdout, replayed.stdout + replayed.stderr
    assert "replayed 0 record" in replayed_again.stdout
    # Still poison after replay, so the consumer dead-letters it again: nothing is lost.
    for _ in range(100):
        letters = await list_dead_letters(settings, TRAIL_GROUP)
        if len(letters) >= 2:
            break
        await asyncio.sleep(0.2)
    assert [letter.event_id for letter in letters] == [event_id, event_id]
