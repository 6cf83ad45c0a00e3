"""Integrity verification of the whole log, for the API and for `careloop audit verify`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_audit.domain.verify import AnchoredRoot, ChainVerifier
from careloop_audit.settings import AuditSettings
from careloop_audit.store.checkpoints import CheckpointStore
from careloop_audit.store.repository import AuditLog, begin_snapshot
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.vault import Vault


class CheckpointStatus(BaseModel):
    tree_size: int
    root_hash: str
    signed_at: datetime
    key_version: int
    signature_valid: bool


class VerificationReport(BaseModel):
    """The verdict on the log: intact, or the first record that is not."""

    ok: bool
    records_checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    root_hash: str = Field(description="Merkle tree hash (hex) over the records that verified.")
    checkpoint: CheckpointStatus | None = Field(
        None, description="The latest anchored checkpoint; none signed yet if null."
    )


async def run_verification(
    sessionmaker: async_sessionmaker[AsyncSession], checkpoints: CheckpointStore
) -> VerificationReport:
    """Verify every record, the chain head and the latest signed checkpoint."""
    # The checkpoint is read first: everything it covers is already committed.
    latest = await checkpoints.latest()
    status: CheckpointStatus | None = None
    anchor: AnchoredRoot | None = None
    if latest is not None:
        valid = await checkpoints.verify(latest)
        status = CheckpointStatus(
            tree_size=latest.tree_size,
            root_hash=latest.root_hash,
            signed_at=latest.signed_at,
            key_version=latest.key_version,
            signature_valid=valid,
        )
        if valid:
            anchor = AnchoredRoot(latest.tree_size, bytes.fromhex(latest.root_hash))
    verifier = ChainVerifier(anchor)
    async with sessionmaker() as session, session.begin():
        await begin_snapshot(session)
        audit_log = AuditLog(session)
        head = await audit_log.head()
        async for record in audit_log.stream():
            if not verifier.feed(record):
                break
    result = verifier.result(head)
    ok, first_bad_seq, reason = result.ok, result.first_bad_seq, result.reason
    if ok and status is not None and not status.signature_valid:
        ok, reason = False, "checkpoint signature invalid: the anchored checkpoint is forged"
    return VerificationReport(
        ok=ok,
        records_checked=result.records_checked,
        first_bad_seq=first_bad_seq,
        reason=reason,
        root_hash=result.root_hash.hex(),
        checkpoint=status,
    )


async def verify_trail(settings: AuditSettings) -> VerificationReport:
    """Verify the log described by `settings`, without the HTTP service running."""
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    try:
        vault = Vault.from_settings(settings)
        store = CheckpointStore(
            settings,
            vault,
            key_name=settings.checkpoint_signing_key,
            read_timeout_s=settings.checkpoint_read_timeout_s,
        )
        return await run_verification(make_sessionmaker(engine), store)
    finally:
        await engine.dispose()
