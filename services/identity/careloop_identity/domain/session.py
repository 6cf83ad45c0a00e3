"""Login sessions: idle and absolute limits, checked whenever a refresh token is used."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class SessionLimits:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True)
class SessionState:
    created_at: datetime
    last_active_at: datetime
    revoked_at: datetime | None


def refusal(state: SessionState, now: datetime, limits: SessionLimits) -> str | None:
    """Why the session can no longer be refreshed (`revoked`, `idle`, `absolute`), or None."""
    if state.revoked_at is not None:
        return "revoked"
    if now >= state.created_at + limits.absolute:
        return "absolute"
    if now >= state.last_active_at + limits.idle:
        return "idle"
    return None
