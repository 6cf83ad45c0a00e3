"""Checkpoints: a signed claim that the log had `tree_size` records with this root."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import rfc8785

from careloop_audit.domain.record import format_instant


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as anchored outside the audit database."""

    tree_size: int
    root_hash: str
    """Hex SHA-256 Merkle tree hash of the first `tree_size` leaves."""
    signed_at: datetime
    key_version: int
    signature: str


def checkpoint_message(tree_size: int, root_hash: str, signed_at: datetime) -> bytes:
    """The bytes a checkpoint signature covers: RFC 8785 JSON of size, root and time."""
    return rfc8785.dumps(
        {"tree_size": tree_size, "root_hash": root_hash, "signed_at": format_instant(signed_at)}
    )
