"""Token buckets per principal and per client address, and the tokens known to be good.

Each replica keeps its own buckets in memory: with N replicas behind a load balancer a
principal may get up to N times the published rate. That is the accepted trade for a
limiter with no shared state on the request path; a shared store can replace
`RateLimiter` behind the same `take` / `peek` calls when exact global limits are needed.

A bucket's size and refill rate may differ per key (a partner client's own limit) and
may change between requests (a new token with another limit): the bucket is refilled at
its old rate up to that moment, then continues at the new one, never holding more than
the new size.
"""

from __future__ import annotations

import hashlib
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

    def resize(self, capacity: float, rate_per_s: float, now: float) -> None:
        """Continue at a new size and rate; tokens earned so far are kept up to the size."""
        self.refill(now)
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.tokens = min(self.tokens, capacity)

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
    """Token buckets by key; the least recently seen are dropped past `max_keys`.

    `per_minute` and `burst` are the default; `take(..., per_minute=n)` gives one key its
    own rate, with a burst in the same proportion to it as the default burst is to the
    default rate (rounded up, at least 1), so a client granted a tenth of the default
    rate may also send a tenth of the default burst at once.

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

    def burst_for(self, per_minute: int) -> int:
        """The bucket size that goes with a rate of `per_minute`."""
        if per_minute == self.per_minute:
            return self.burst
        return max(1, math.ceil(per_minute * self.burst / self.per_minute))

    def take(self, key: str, now: float, *, per_minute: int | None = None) -> RateDecision:
        """Spend one token of `key`'s bucket at time `now` (seconds).

        `per_minute` is the key's own rate (None: the default); a bucket whose rate
        changed since the last request continues at the new one.
        """
        rate = self.per_minute if per_minute is None else per_minute
        if rate <= 0:
            raise ValueError("per_minute must be positive")
        capacity, rate_per_s = float(self.burst_for(rate)), rate / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(capacity, rate_per_s, capacity, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if bucket.capacity != capacity or bucket.rate_per_s != rate_per_s:
                bucket.resize(capacity, rate_per_s, now)
        return self._decision(bucket, allowed=bucket.take(now))

    def peek(self, key: str, now: float) -> RateDecision:
        """Whether `key` could spend a token at `now`, without spending one.

        Creates no bucket: a key never charged has a full default bucket, and looking
        must not let a flood of new keys push real buckets out.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            return RateDecision(
                allowed=True, limit=self.burst, remaining=self.burst, retry_after_s=0
            )
        bucket.refill(now)
        return self._decision(bucket, allowed=bucket.tokens >= 1.0)

    @staticmethod
    def _decision(bucket: TokenBucket, *, allowed: bool) -> RateDecision:
        retry_after = 0 if allowed else max(1, math.ceil(bucket.seconds_until_token()))
        return RateDecision(
            allowed=allowed,
            limit=int(bucket.capacity),
            remaining=int(bucket.tokens),
            retry_after_s=retry_after,
        )

    def __len__(self) -> int:
        return len(self._buckets)


class VerifiedTokens:
    """Access tokens that passed verification recently, by SHA-256, until they expire.

    Only ever used to let a token that already proved itself past a client address that
    is over its budget for bad tokens; the token is still verified in full on every
    request. Only digests are held, so no usable token outlives its request here.
    The least recently seen are dropped past `max_tokens`: a dropped token is only
    treated like a new one.
    """

    def __init__(self, *, max_tokens: int = 100_000) -> None:
        self.max_tokens = max_tokens
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def remember(self, token: str, expires_at: float) -> None:
        """Note that `token` verified, valid until `expires_at` (epoch seconds)."""
        digest = self._digest(token)
        self._expiry[digest] = expires_at
        self._expiry.move_to_end(digest)
        while len(self._expiry) > self.max_tokens:
            self._expiry.popitem(last=False)

    def knows(self, token: str, now: float) -> bool:
        """Whether `token` verified before and has not expired at `now`."""
        expires_at = self._expiry.get(self._digest(token))
        return expires_at is not None and now < expires_at

    def forget(self, token: str) -> None:
        """Drop `token` (it failed verification: revoked or expired since)."""
        self._expiry.pop(self._digest(token), None)

    def __len__(self) -> int:
        return len(self._expiry)
