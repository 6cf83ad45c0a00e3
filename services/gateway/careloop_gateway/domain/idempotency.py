"""Idempotency-Key rules: what a repeated POST gets."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

MAX_KEY_LENGTH = 255


class RecordStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class Outcome(enum.Enum):
    """What to do with a request whose key was already seen."""

    REPLAY = "replay"
    IN_PROGRESS = "in_progress"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class StoredRecord:
    """An idempotency record as the store holds it."""

    principal_key: str
    key: str
    request_hash: str
    status: RecordStatus
    status_code: int | None
    headers: list[tuple[str, str]]
    body: bytes | None
    created_at: datetime
    completed_at: datetime | None


class InvalidKey(ValueError):
    """The Idempotency-Key header is empty, too long or not printable ASCII."""


def validate_key(key: str) -> str:
    """Return the key, or raise `InvalidKey` with the reason."""
    if not key:
        raise InvalidKey("Idempotency-Key must not be empty.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters.")
    if not all(0x20 <= ord(c) < 0x7F for c in key):
        raise InvalidKey("Idempotency-Key must be printable ASCII.")
    return key


def request_hash(method: str, target: str, content_type: str, body: bytes) -> str:
    """Fingerprint of what a request asks for: method, routed target with query, body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), target.encode(), content_type.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(body)
    return digest.hexdigest()


def decide(record: StoredRecord, incoming_hash: str) -> Outcome:
    """Decide for a live (not expired) record holding the same key."""
    if record.request_hash != incoming_hash:
        return Outcome.MISMATCH
    if record.status is RecordStatus.IN_PROGRESS:
        return Outcome.IN_PROGRESS
    return Outcome.REPLAY


def should_store(status_code: int) -> bool:
    """Only final answers are kept: 2xx and 4xx. A 5xx may succeed when retried."""
    return 200 <= status_code < 300 or 400 <= status_code < 500


SEARCH_SUFFIX = "/_search"


def is_search(method: str, upstream_path: str) -> bool:
    """A POST to `.../_search` is a read sent as a POST (FHIR's search by body).

    It changes nothing, so it needs no key; and a kept answer would hold the patients it
    found in the gateway's database and replay that disclosure without the owning
    service auditing it. Such a POST is forwarded every time, key or not."""
    return method.upper() == "POST" and upstream_path.rstrip("/").endswith(SEARCH_SUFFIX)
