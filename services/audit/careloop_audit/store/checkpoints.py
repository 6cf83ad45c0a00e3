"""Signed checkpoints anchored on the compacted `careloop.audit.checkpoints` topic.

The anchor lives outside the audit database on purpose: whoever can rewrite the
database cannot also rewrite (or re-sign) the checkpoints, so truncation and
wholesale rewrites of the log are caught.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from careloop_audit.domain.checkpoint import Checkpoint, checkpoint_message
from careloop_contracts import AuditCheckpointSigned, checkpoint_record_key
from careloop_kit.bus.kafka import admin_client, ensure_topics, kafka_security, topic_name
from careloop_kit.rows import record_of
from careloop_kit.settings import KitSettings
from careloop_kit.vault import Vault

CHECKPOINT_TOPIC = "careloop.audit.checkpoints"
_VAULT_SIGNATURE = re.compile(r"^vault:v[0-9]+:[A-Za-z0-9+/=]+$")


class CheckpointUnreadable(Exception):
    """The checkpoint topic could not be read to its end in time."""


def signed_event(checkpoint: Checkpoint) -> AuditCheckpointSigned:
    """The checkpoint as the event anchored on the topic and published on the stream."""
    return AuditCheckpointSigned.model_validate(checkpoint, from_attributes=True)


def _from_value(value: bytes | None) -> Checkpoint | None:
    if value is None:
        return None
    try:
        event = AuditCheckpointSigned.model_validate_json(value)
    except (ValidationError, ValueError):
        return None  # not a checkpoint; it cannot vouch for anything
    return record_of(Checkpoint, event.model_dump())


class CheckpointStore:
    """Signs, anchors, reads back and verifies checkpoints."""

    def __init__(
        self,
        settings: KitSettings,
        vault: Vault,
        *,
        key_name: str,
        read_timeout_s: float = 10.0,
    ) -> None:
        self._settings = settings
        self._vault = vault
        self._key_name = key_name
        self._read_timeout_s = read_timeout_s
        self.topic = topic_name(settings, CHECKPOINT_TOPIC)

    async def ensure_topic(self) -> None:
        """Create the compacted anchor topic if it is missing."""
        await ensure_topics(self._settings, [self.topic])

    async def sign(self, tree_size: int, root_hash: str, signed_at: datetime) -> Checkpoint:
        """Sign (size, root, time) with the Vault transit key."""
        message = checkpoint_message(tree_size, root_hash, signed_at)
        signature, version = await self._vault.sign(self._key_name, message)
        return Checkpoint(tree_size, root_hash, signed_at, version, signature)

    async def anchor(self, producer: AIOKafkaProducer, checkpoint: Checkpoint) -> None:
        """Write the checkpoint to the anchor topic and wait for the broker's ack."""
        await producer.send_and_wait(
            self.topic,
            value=signed_event(checkpoint).to_json(),
            key=checkpoint_record_key(checkpoint.tree_size).encode(),
        )

    async def verify(self, checkpoint: Checkpoint) -> bool:
        """True when the checkpoint's signature is valid for its size, root and time."""
        if not _VAULT_SIGNATURE.fullmatch(checkpoint.signature):
            return False
        message = checkpoint_message(
            checkpoint.tree_size, checkpoint.root_hash, checkpoint.signed_at
        )
        return await self._vault.verify(self._key_name, message, checkpoint.signature)

    async def _partitions(self) -> list[int]:
        """The topic's partitions; none when the topic does not exist (never auto-created)."""
        async with admin_client(self._settings) as admin:
            if self.topic not in await admin.list_topics():
                return []
            (description,) = await admin.describe_topics([self.topic])
            return sorted(int(p["partition"]) for p in description["partitions"])

    def _consumer(self) -> AIOKafkaConsumer:
        # No group: a reader of the whole topic, never committing offsets.
        return AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            # Start from the beginning; "latest" would race the seek below on assign.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="careloop-audit-checkpoint-reader",
            **kafka_security(self._settings),
        )

    async def latest(self) -> Checkpoint | None:
        """The checkpoint with the largest tree size on the topic (None if there is none)."""
        partitions = await self._partitions()
        if not partitions:
            return None
        assigned = [TopicPartition(self.topic, p) for p in partitions]
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.assign(assigned)
            end = await consumer.end_offsets(assigned)
            begin = await consumer.beginning_offsets(assigned)
            await consumer.seek_to_beginning(*assigned)
            # Done when the last record of every partition has been seen (compaction never
            # removes the last one), not when the position says so: a position that jumped
            # ahead must not quietly hide a checkpoint.
            pending = {tp for tp in assigned if end[tp] > begin[tp]}
            best: Checkpoint | None = None
            deadline = time.monotonic() + self._read_timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise CheckpointUnreadable(
                        f"could not read {self.topic} to its end in {self._read_timeout_s}s"
                    )
                batches = await consumer.getmany(*pending, timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        checkpoint = _from_value(record.value)
                        if checkpoint is not None and (
                            best is None
                            or (checkpoint.tree_size, checkpoint.signed_at)
                            > (best.tree_size, best.signed_at)
                        ):
                            best = checkpoint
                        if record.offset >= end[tp] - 1:
                            pending.discard(tp)
            return best
        finally:
            await consumer.stop()
