"""Signing a checkpoint: the log's Merkle root, signed, anchored and announced.

The signer keeps the tree's peaks in memory and reads only records it has not seen, so a
checkpoint costs O(new records). It also re-checks the chain links of what it reads
and refuses to sign a log whose chain does not follow on from what it signed before.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field

from sqlalchemy import func, select

from careloop_audit.domain.checkpoint import Checkpoint
from careloop_audit.domain.hashing import ZERO_HASH, MerkleAccumulator, chain_hash
from careloop_audit.store.checkpoints import CheckpointStore, signed_event
from careloop_audit.store.repository import AuditLog
from careloop_contracts import PLATFORM_ORG_ID
from careloop_kit.service import Runtime

log = logging.getLogger(__name__)

_SIGNER_LOCK = zlib.crc32(b"careloop-audit-checkpoint-signer")


class ChainBroken(Exception):
    """The stored chain does not follow on from what this process already read."""


@dataclass
class CheckpointSigner:
    """Decides when to sign, and signs, anchors and announces one checkpoint."""

    store: CheckpointStore
    every_records: int
    interval_s: float
    tree: MerkleAccumulator = field(default_factory=MerkleAccumulator)
    last_chain_hash: bytes = ZERO_HASH
    signed_size: int = 0
    last_signed_at: float = field(default_factory=time.monotonic)
    last: Checkpoint | None = None
    broken: str | None = None

    async def tick(self, runtime: Runtime, *, force: bool = False) -> Checkpoint | None:
        """Sign a checkpoint if one is due (or `force`); returns it, or None."""
        if self.broken is not None:
            return None
        async with runtime.sessionmaker() as session, session.begin():
            # One signer among replicas at a time; the others skip this round.
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(_SIGNER_LOCK))):
                return None
            audit_log = AuditLog(session)
            head = await audit_log.head()
            pending = head.last_seq - self.signed_size
            elapsed = time.monotonic() - self.last_signed_at
            due = pending >= self.every_records or (pending > 0 and elapsed >= self.interval_s)
            if not (due or (force and head.last_seq > 0)):
                return None
            try:
                await self._catch_up(audit_log, head.last_seq)
            except ChainBroken as exc:
                self.broken = str(exc)
                log.error("refusing to sign audit checkpoints: %s", exc)
                return None
            checkpoint = await self.store.sign(
                self.tree.size, self.tree.root().hex(), runtime.clock.now()
            )
            await self.store.anchor(runtime.producer, checkpoint)
            event = signed_event(checkpoint)
            await runtime.outbox.add(
                session, event, key=event.partition_key(), org_id=PLATFORM_ORG_ID
            )
        self.signed_size = checkpoint.tree_size
        self.last_signed_at = time.monotonic()
        self.last = checkpoint
        log.info("signed audit checkpoint at size %d", checkpoint.tree_size)
        return checkpoint

    async def _catch_up(self, audit_log: AuditLog, up_to_seq: int) -> None:
        async for seq, leaf, link in audit_log.leaves(
            after_seq=self.tree.size, up_to_seq=up_to_seq
        ):
            if seq != self.tree.size + 1:
                raise ChainBroken(f"expected seq {self.tree.size + 1}, found {seq}")
            if chain_hash(self.last_chain_hash, leaf) != link:
                raise ChainBroken(f"chain hash of seq {seq} does not follow from seq {seq - 1}")
            self.tree.append(leaf)
            self.last_chain_hash = link
        if self.tree.size != up_to_seq:
            raise ChainBroken(f"head says seq {up_to_seq}, log ends at seq {self.tree.size}")
