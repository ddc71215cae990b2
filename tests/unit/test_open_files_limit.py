"""`raise_open_files_limit`'s choices for the limits a system may set (the e2e test covers a real one)."""

from __future__ import annotations

import resource

import pytest

from vibe_ensemble.ops.startup import raise_open_files_limit

INF = resource.RLIM_INFINITY


class Limits:
    """getrlimit/setrlimit of RLIMIT_NOFILE, refusing a soft limit above `cap`."""

    def __init__(self, soft: int, hard: int, cap: int | None = None) -> None:
        self.soft, self.hard, self.cap = soft, hard, cap
        self.asked: list[int] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        soft, hard = limits
        assert hard == self.hard  # the hard limit is never changed
        self.asked.append(soft)
        if self.cap is not None and soft > self.cap:
            raise ValueError("not allowed to raise maximum limit")
        self.soft = soft


@pytest.mark.parametrize(
    ("soft", "hard", "cap", "result", "asked"),
    [
        (1024, 524_288, None, (1024, 524_288), [524_288]),  # a desktop: raised to the hard limit
        (524_288, 524_288, None, (524_288, 524_288), []),  # already there: nothing asked
        (256, INF, None, (256, 1_048_576), [1_048_576]),  # unlimited hard: Linux's default cap
        (256, INF, 10_240, (256, 10_240), [1_048_576, 10_240]),  # macOS refuses more than OPEN_MAX
        (20_000, INF, 10_240, (20_000, 20_000), [1_048_576]),  # refused, and never lowered
        (INF, INF, None, (INF, INF), []),  # unlimited (-1) is not "below" anything
    ],
)
def test_the_soft_limit_is_raised_never_lowered(
    monkeypatch: pytest.MonkeyPatch,
    soft: int,
    hard: int,
    cap: int | None,
    result: tuple[int, int],
    asked: list[int],
) -> None:
    limits = Limits(soft, hard, cap)
    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limits.setrlimit)
    assert raise_open_files_limit() == result
    assert limits.asked == asked
