"""Lockout after repeated failed logins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int
    duration: timedelta


@dataclass(frozen=True)
class FailureState:
    """Consecutive failures since the last success, and the lock they caused."""

    failed_attempts: int
    locked_until: datetime | None

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def retry_after_s(self, now: datetime) -> int:
        if self.locked_until is None:
            return 0
        return max(1, int((self.locked_until - now).total_seconds() + 0.999))


def after_failure(state: FailureState, now: datetime, policy: LockoutPolicy) -> FailureState:
    """One more failure; reaching the threshold locks the account and restarts the count."""
    attempts = state.failed_attempts + 1
    if attempts >= policy.threshold:
        return FailureState(failed_attempts=0, locked_until=now + policy.duration)
    return FailureState(failed_attempts=attempts, locked_until=state.locked_until)


CLEAN = FailureState(failed_attempts=0, locked_until=None)
"""The state after a successful login."""
