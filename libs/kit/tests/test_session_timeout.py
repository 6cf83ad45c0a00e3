"""The consumers' session timeout (`kafka_session_timeout_ms`): how long a crashed
consumer keeps its partitions. Real Kafka: a consumer process is SIGKILLed and the
partitions reach the other member of its group once that timeout has passed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from careloop_kit.bus.kafka import ensure_topics, make_consumer, topic_name
from careloop_kit.settings import KAFKA_HEARTBEAT_INTERVAL_MS, KitSettings
from careloop_kit.testing.kafka import CRASH_TEST_SESSION_TIMEOUT_MS

# Joins the group, says so once it owns partitions, then waits to be killed.
MEMBER = textwrap.dedent(
    """
    import asyncio, sys
    from careloop_kit.bus.kafka import make_consumer
    from careloop_kit.settings import KitSettings

    async def main() -> None:
        consumer = make_consumer(
            KitSettings(kafka_bootstrap=sys.argv[1]), sys.argv[2], group_id=sys.argv[3],
            client_id="doomed-member",
        )
        await consumer.start()
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        print("assigned", flush=True)
        while True:
            await consumer.getmany(timeout_ms=200)

    asyncio.run(main())
    """
)


@pytest.mark.unit
def test_the_session_timeout_leaves_room_for_three_missed_heartbeats() -> None:
    assert KitSettings().kafka_session_timeout_ms == 10_000
    with pytest.raises(ValidationError, match="greater than 3000"):
        KitSettings(kafka_session_timeout_ms=3 * KAFKA_HEARTBEAT_INTERVAL_MS)
    assert CRASH_TEST_SESSION_TIMEOUT_MS > 3 * KAFKA_HEARTBEAT_INTERVAL_MS


@pytest.mark.service
async def test_a_killed_consumers_partitions_move_after_the_session_timeout(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = KitSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kafka_session_timeout_ms=CRASH_TEST_SESSION_TIMEOUT_MS,
    )
    topic = topic_name(settings, "careloop.patients")
    group = topic_name(settings, "careloop.session-timeout")
    await ensure_topics(settings, [topic])
    output = tmp_path / "member.out"
    env = {
        **os.environ,
        "CARELOOP_KAFKA_SESSION_TIMEOUT_MS": str(CRASH_TEST_SESSION_TIMEOUT_MS),
        "PYTHONUNBUFFERED": "1",
    }
    with output.open("wb") as sink:
        # Popen (not asyncio's): the finally below kills it whatever happened.
        member = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", MEMBER, kafka_bootstrap, topic, group],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    survivor = make_consumer(settings, topic, group_id=group, client_id="survivor")
    try:
        deadline = time.monotonic() + 60
        while b"assigned" not in output.read_bytes():
            assert member.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            await asyncio.sleep(0.1)
        await survivor.start()
        # Both members share the partitions first.
        while not survivor.assignment():
            assert time.monotonic() < deadline, "the survivor never joined"
            await survivor.getmany(timeout_ms=200)
        every = {TopicPartition(topic, p) for p in survivor.partitions_for_topic(topic) or ()}
        assert set() < survivor.assignment() < every
        member.kill()
        member.wait(10)
        killed_at = time.monotonic()
        while survivor.assignment() != every:
            assert time.monotonic() < deadline, "the killed member's partitions never moved"
            await survivor.getmany(timeout_ms=200)
        moved_after = time.monotonic() - killed_at
    finally:
        if member.poll() is None:
            member.kill()
            member.wait(10)
        await survivor.stop()
    # No clean leave: the group waited for the session to expire, counted from the
    # member's last heartbeat (at most one interval before the kill). Under the 10 s
    # production default the move could not have come this soon.
    heartbeat_s = KAFKA_HEARTBEAT_INTERVAL_MS / 1000
    session_s = CRASH_TEST_SESSION_TIMEOUT_MS / 1000
    default_s = KitSettings().kafka_session_timeout_ms / 1000
    assert session_s - heartbeat_s <= moved_after < default_s - heartbeat_s, moved_after
