"""Revoked sessions: access tokens of a logged-out session stop working at once.

Identity publishes `careloop.identity.session.revoked.v1` (field `session_id`)
on logout; each service process feeds those into its `RevokedSessions`, which
`TokenVerifier` consults. An entry is kept for the longest possible access-token
lifetime after revocation: by then every token of the session has expired anyway.
Every process needs every revocation, so the consumer feeding this set must read
the whole topic (a consumer group of its own per process).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from careloop_kit.clock import Clock, SystemClock

DEFAULT_MAX_TOKEN_LIFETIME_S = 3600


REVOKED_SESSIONS_KEY = "revoked_sessions"
"""Where a service runtime keeps its `RevokedSessions` (`runtime.state[...]`)."""


class RevokedSessions:
    """An in-memory set of revoked session ids with expiry."""

    def __init__(
        self, *, ttl_s: float = DEFAULT_MAX_TOKEN_LIFETIME_S, clock: Clock | None = None
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.ttl_s = ttl_s
        self._clock = clock or SystemClock()
        self._until: dict[str, datetime] = {}

    def revoke(self, session_id: str, *, at: datetime | None = None) -> None:
        """Refuse tokens of `session_id` from now (or from `at`) for `ttl_s` seconds."""
        if not session_id:
            return
        until = (at or self._clock.now()) + timedelta(seconds=self.ttl_s)
        current = self._until.get(session_id)
        if current is None or until > current:
            self._until[session_id] = until
        self._purge()

    def is_revoked(self, session_id: str) -> bool:
        """Whether tokens of `session_id` must be refused."""
        until = self._until.get(session_id)
        if until is None:
            return False
        if until <= self._clock.now():
            del self._until[session_id]
            return False
        return True

    def __len__(self) -> int:
        self._purge()
        return len(self._until)

    def _purge(self) -> None:
        now = self._clock.now()
        for session_id in [sid for sid, until in self._until.items() if until <= now]:
            del self._until[session_id]

    def handler(self) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """A bus handler `(session, envelope, event)` for the session-revoked event."""

        async def on_session_revoked(session: Any, envelope: Any, event: Any) -> None:
            session_id = _field(event, "session_id")
            if isinstance(session_id, str) and session_id:
                self.revoke(session_id)

        return on_session_revoked


def _field(event: Any, name: str) -> Any:
    if isinstance(event, dict):
        return event.get(name)
    return getattr(event, name, None)
