"""Which part of the log a page reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Window:
    """A time range of the log (`since` <= occurred_at < `until`) and a keyset cursor
    into it (`before_seq`), read newest first, `limit` records at a time."""

    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None
    limit: int = 50
