"""Token buckets: a burst, then the refill rate; one bucket per key; bounded memory."""

from __future__ import annotations

import pytest

from vibe_ensemble.auth.ratelimit import RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_grants_its_capacity_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(capacity=3, rate=2.0, tokens=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0


def test_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket(capacity=2, rate=1.0, tokens=0, updated=0.0)
    assert bucket.take(1_000_000.0) == 0.0
    assert bucket.take(1_000_000.0) == 0.0
    assert bucket.take(1_000_000.0) > 0


def test_limiter_rate_is_per_minute_and_burst_caps_the_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter({"worker": 120}, burst=5, clock=clock)
    granted = [limiter.take("cred:1", "worker") for _ in range(6)]
    assert granted[:5] == [0.0] * 5
    assert granted[5] == pytest.approx(0.5)  # 120/min = 2/s
    clock.now += 0.5
    assert limiter.take("cred:1", "worker") == 0.0


def test_small_rates_keep_a_small_bucket() -> None:
    limiter = RateLimiter({"viewer": 2}, burst=300, clock=Clock())
    assert [limiter.take("k", "viewer") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k", "viewer") == pytest.approx(30.0)


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter({"worker": 60}, burst=1, clock=Clock())
    assert limiter.take("cred:1", "worker") == 0.0
    assert limiter.take("cred:1", "worker") > 0
    assert limiter.take("cred:2", "worker") == 0.0


def test_zero_or_unknown_class_is_unlimited() -> None:
    limiter = RateLimiter({"admin": 0}, burst=1, clock=Clock())
    assert all(limiter.take("cred:1", "admin") == 0.0 for _ in range(100))
    assert all(limiter.take("cred:1", "nobody") == 0.0 for _ in range(100))
    assert len(limiter) == 0


def test_memory_is_bounded_by_forgetting_the_least_recently_used() -> None:
    limiter = RateLimiter({"viewer": 60}, burst=1, clock=Clock(), max_buckets=3)
    for key in ("a", "b", "c"):
        limiter.take(key, "viewer")
    assert limiter.take("a", "viewer") > 0  # "a" is now the most recently used
    limiter.take("d", "viewer")  # evicts "b"
    assert len(limiter) == 3
    assert limiter.take("a", "viewer") > 0  # still remembered: still empty
    assert limiter.take("b", "viewer") == 0.0  # forgotten: a fresh bucket


def test_a_refusal_says_the_same_wait_in_its_text_and_its_details() -> None:
    from vibe_ensemble.domain.errors import RateLimited
    from vibe_ensemble.services.tokens import _seconds

    for wait in (0.004, 0.1, 0.149, 2.0, 59.91):
        refusal = RateLimited(f"retry in {_seconds(wait)}", wait)
        assert refusal.message == f"retry in {refusal.details['retry_after_s']:.1f}s", wait
