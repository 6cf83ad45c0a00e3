"""Verification of the log: recompute everything from the columns and compare.

Per record, in seq order: the seq is the next one expected (a delete or a reorder
shows up as a gap), the canonical bytes match the columns (an edited column), the
leaf hash matches the canonical bytes, and the chain hash matches the previous
chain hash and the leaf. Then the log is held against the latest signed checkpoint:
a log shorter than the checkpoint was truncated, and a different Merkle root over
the checkpoint's first `tree_size` leaves means the log was rewritten, even if the
rewrite kept the chain consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from careloop_audit.domain.hashing import ZERO_HASH, MerkleAccumulator, chain_hash, leaf_hash
from careloop_audit.domain.record import RecordFields, canonical_json


@dataclass(frozen=True)
class StoredRecordView:
    """An audit record as read back from storage: its columns and its stored hashes."""

    fields: RecordFields
    canonical: bytes
    leaf_hash: bytes
    chain_hash: bytes


@dataclass(frozen=True)
class ChainHead:
    """The stored head of the chain: what the appender believes the last record is."""

    last_seq: int
    last_chain_hash: bytes


@dataclass(frozen=True)
class AnchoredRoot:
    """What a signed checkpoint claims: the first `tree_size` leaves hash to `root_hash`."""

    tree_size: int
    root_hash: bytes


@dataclass(frozen=True)
class VerificationResult:
    ok: bool
    records_checked: int
    first_bad_seq: int | None
    reason: str | None
    root_hash: bytes
    """Merkle tree hash over the records that verified."""


class ChainVerifier:
    """Feed records in seq order, then ask for the result. Stops at the first bad one."""

    def __init__(self, anchor: AnchoredRoot | None = None) -> None:
        self._anchor = anchor
        self._tree = MerkleAccumulator()
        self._previous = ZERO_HASH
        self._checked = 0
        self._anchor_root: bytes | None = None
        self.first_bad_seq: int | None = None
        self.reason: str | None = None
        if anchor is not None and anchor.tree_size == 0:
            self._anchor_root = self._tree.root()

    @property
    def failed(self) -> bool:
        return self.first_bad_seq is not None

    def _fail(self, seq: int, reason: str) -> bool:
        self.first_bad_seq, self.reason = seq, reason
        return False

    def feed(self, record: StoredRecordView) -> bool:
        """Check one record; False once the log is known to be bad."""
        if self.failed:
            return False
        self._checked += 1
        expected = self._tree.size + 1
        seq = record.fields.seq
        if seq != expected:
            kind = "missing record(s) (deleted?)" if seq > expected else "out-of-order record"
            return self._fail(expected, f"seq gap: expected seq {expected}, found {seq}: {kind}")
        if canonical_json(record.fields) != record.canonical:
            return self._fail(seq, f"edited: columns of seq {seq} do not match its canonical bytes")
        leaf = leaf_hash(record.canonical)
        if leaf != record.leaf_hash:
            return self._fail(seq, f"leaf hash of seq {seq} does not match its canonical bytes")
        link = chain_hash(self._previous, leaf)
        if link != record.chain_hash:
            return self._fail(seq, f"chain hash of seq {seq} does not follow from seq {seq - 1}")
        self._previous = link
        self._tree.append(leaf)
        if self._anchor is not None and self._tree.size == self._anchor.tree_size:
            self._anchor_root = self._tree.root()
        return True

    def result(self, head: ChainHead | None = None) -> VerificationResult:
        """The verdict, after the records; `head` adds the stored head to the checks."""
        size = self._tree.size
        if not self.failed and self._anchor is not None:
            anchor = self._anchor
            if size < anchor.tree_size:
                self._fail(
                    size + 1,
                    f"truncated: log has {size} records, checkpoint at size {anchor.tree_size}",
                )
            elif self._anchor_root != anchor.root_hash:
                self._fail(
                    1,
                    f"rewritten: root mismatch over the first {anchor.tree_size} records "
                    "against the signed checkpoint",
                )
        if (
            not self.failed
            and head is not None
            and (head.last_seq != size or head.last_chain_hash != self._previous)
        ):
            self._fail(
                min(head.last_seq, size) + 1,
                f"head mismatch: chain head says seq {head.last_seq}, log ends at seq {size}",
            )
        return VerificationResult(
            ok=not self.failed,
            records_checked=self._checked,
            first_bad_seq=self.first_bad_seq,
            reason=self.reason,
            root_hash=self._tree.root(),
        )


def verify_chain(
    records: Iterable[StoredRecordView],
    *,
    anchor: AnchoredRoot | None = None,
    head: ChainHead | None = None,
) -> VerificationResult:
    """Verify records (in seq order) and, when given, the checkpoint and stored head."""
    verifier = ChainVerifier(anchor)
    for record in records:
        if not verifier.feed(record):
            break
    return verifier.result(head)


def seal(fields: RecordFields, previous_chain_hash: bytes) -> StoredRecordView:
    """The record as it must be stored after `previous_chain_hash`: canonical and hashes."""
    canonical = canonical_json(fields)
    leaf = leaf_hash(canonical)
    return StoredRecordView(
        fields=fields,
        canonical=canonical,
        leaf_hash=leaf,
        chain_hash=chain_hash(previous_chain_hash, leaf),
    )
