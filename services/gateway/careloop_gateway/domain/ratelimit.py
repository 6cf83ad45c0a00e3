"""Token buckets per principal.

Each replica keeps its own buckets in memory: with N replicas behind a load balancer a
principal may get up to N times the published rate. That is the accepted trade for a
limiter with no shared state on the request path; a shared store can replace
`RateLimiter` behind the same `take` call when exact global limits are needed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one request against its principal's bucket."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


@dataclass
class TokenBucket:
    """Holds up to `capacity` tokens, refilled at `rate_per_s`; a request takes one."""

    capacity: float
    rate_per_s: float
    tokens: float
    updated_at: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated_at = max(self.updated_at, now)

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def seconds_until_token(self) -> float:
        missing = max(0.0, 1.0 - self.tokens)
        return missing / self.rate_per_s if self.rate_per_s > 0 else math.inf


class RateLimiter:
    """Per-principal token buckets; the least recently seen are dropped past `max_keys`.

    A dropped bucket starts full again, which only ever favours the principal, so the cap
    bounds memory without making anyone wait longer.
    """

    def __init__(self, per_minute: int, burst: int, *, max_keys: int = 100_000) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError("per_minute and burst must be positive")
        self.per_minute = per_minute
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> RateDecision:
        """Spend one token of `key`'s bucket at time `now` (seconds, monotonic)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.burst, self.per_minute / 60.0, float(self.burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        allowed = bucket.take(now)
        retry_after = 0 if allowed else max(1, math.ceil(bucket.seconds_until_token()))
        return RateDecision(
            allowed=allowed,
            limit=self.burst,
            remaining=int(bucket.tokens),
            retry_after_s=retry_after,
        )

    def __len__(self) -> int:
        return len(self._buckets)
