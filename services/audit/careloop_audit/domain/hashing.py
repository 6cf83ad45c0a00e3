"""Hashes of the log: RFC 6962 leaves and Merkle tree hashes, and the linear hash chain.

The chain (each record hashes its predecessor) lets a verifier name the first bad
record. The Merkle tree hash over the same leaves is what checkpoints sign, so
inclusion and consistency proofs in the style of Certificate Transparency are possible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
"""The previous chain hash of record 1."""
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(canonical: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || entry)."""
    return hashlib.sha256(LEAF_PREFIX + canonical).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """SHA-256(previous chain hash || leaf hash)."""
    return hashlib.sha256(previous + leaf).digest()


def merkle_tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, straight from RFC 6962 section 2.1 (recursive; reference)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(merkle_tree_hash(leaves[:k]), merkle_tree_hash(leaves[k:]))


@dataclass
class MerkleAccumulator:
    """The RFC 6962 tree hash of a growing log in O(log n) memory.

    Keeps the roots of the perfect subtrees that make up the log (one per set bit
    of its size, largest first); the tree hash folds them from the right.
    """

    size: int = 0
    _peaks: list[tuple[int, bytes]] = field(default_factory=list)

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        self._peaks.append((1, leaf))
        while len(self._peaks) >= 2 and self._peaks[-1][0] == self._peaks[-2][0]:
            (width, right), (_, left) = self._peaks.pop(), self._peaks.pop()
            self._peaks.append((width * 2, node_hash(left, right)))
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._peaks:
            return hashlib.sha256(b"").digest()
        acc = self._peaks[-1][1]
        for _, peak in reversed(self._peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc
