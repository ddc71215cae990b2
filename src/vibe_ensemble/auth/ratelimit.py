"""Rate limits: a token bucket per credential (and per client address for failed logins).

Buckets live in this process. Each replica keeps its own, so with N replicas a
credential may spend up to N times its rate; the limit is a guard against a
runaway client, not a quota. `docs/security.md` says so too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_BUCKETS = 10_000  # beyond this, the least recently used buckets are forgotten (they were full anyway)


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled at `rate` tokens a second; a request takes one."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets keyed by a string (`cred:12`, `addr:10.0.0.7`), one rate per kind of key.

    `per_minute` maps a class (a token role, or `auth_failure`) to requests per
    minute; 0 or a missing class means unlimited.
    """

    def __init__(
        self,
        per_minute: Mapping[str, int],
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.per_minute = dict(per_minute)
        self.burst = burst
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, cls: str) -> float:
        """Spend one request of `key` (limited as `cls`): 0.0 when allowed, else seconds to wait."""
        per_minute = self.per_minute.get(cls, 0)
        if per_minute <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity = float(min(self.burst, per_minute))
            bucket = TokenBucket(capacity=capacity, rate=per_minute / 60.0, tokens=capacity, updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)
