"""The per-credential caps of open feeds and held waits (auth/concurrency.py)."""

from __future__ import annotations

import pytest

from vibe_ensemble.auth.concurrency import ConcurrencyLimits
from vibe_ensemble.domain.errors import TooManyOpen


def test_a_credential_holds_at_most_its_cap_and_gets_slots_back() -> None:
    limits = ConcurrencyLimits({"feed": 2, "wait": 1})
    first, second = limits.take("feed", 7), limits.take("feed", 7)
    with pytest.raises(TooManyOpen) as err:
        limits.take("feed", 7)
    assert err.value.http_status == 429 and err.value.code == "too_many_open"
    assert err.value.details == {"kind": "feed", "limit": 2}
    assert "VIBE_MAX_FEEDS_PER_CREDENTIAL" in err.value.message
    limits.take("feed", 8).release()  # another credential is not affected
    limits.take("wait", 7).release()  # nor another kind
    first.release()
    first.release()  # a second release gives nothing back twice
    assert limits.held("feed", 7) == 1
    third = limits.take("feed", 7)
    for slot in (second, third):
        slot.release()
    assert limits.held("feed", 7) == 0


def test_hold_releases_on_error_and_the_server_itself_is_not_capped() -> None:
    limits = ConcurrencyLimits({"wait": 1})
    with pytest.raises(RuntimeError), limits.hold("wait", 3):
        raise RuntimeError("the wait failed")
    assert limits.held("wait", 3) == 0
    for _ in range(5):
        limits.take("wait", None)  # no credential (the server, stdio): never capped
    with pytest.raises(ValueError, match="unknown kinds"):
        ConcurrencyLimits({"sockets": 1})
