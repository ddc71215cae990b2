"""Caps on what one credential may hold open at once: live feeds (SSE and WebSocket) and held
`wait_for_messages` calls.

A rate limit bounds how fast a token asks; these bound how much it keeps: each open feed or
held wait costs a connection, a coroutine and a subscriber, for minutes. Counts live in this
process (like the rate-limit buckets), so with N replicas a credential may hold up to N times
the cap. A credential id of None (the server itself, stdio) is not capped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from vibe_ensemble.domain.errors import TooManyOpen

# what each kind is called in messages, and the setting that sets its cap
KINDS = {
    "feed": ("open live feeds (SSE, WebSocket or MCP subscriptions/listen)", "VIBE_MAX_FEEDS_PER_CREDENTIAL"),
    "wait": ("held wait_for_messages calls", "VIBE_MAX_WAITS_PER_CREDENTIAL"),
}


class Slot:
    """One held place; `release()` gives it back (once, however often it is called)."""

    def __init__(self, limits: ConcurrencyLimits | None, key: tuple[str, int] | None) -> None:
        self._limits = limits
        self._key = key

    def release(self) -> None:
        if self._limits is not None and self._key is not None:
            self._limits.give_back(self._key)
            self._limits = None


class ConcurrencyLimits:
    """At most `caps[kind]` slots of each kind per credential."""

    def __init__(self, caps: Mapping[str, int]) -> None:
        unknown = set(caps) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds: {sorted(unknown)}")
        self.caps = dict(caps)
        self._held: dict[tuple[str, int], int] = {}

    def held(self, kind: str, credential_id: int) -> int:
        return self._held.get((kind, credential_id), 0)

    def take(self, kind: str, credential_id: int | None) -> Slot:
        """A slot of `kind` for the credential, or TooManyOpen when it already holds its cap."""
        if credential_id is None or kind not in self.caps:
            return Slot(None, None)
        key = (kind, credential_id)
        cap = self.caps[kind]
        if self._held.get(key, 0) >= cap:
            what, setting = KINDS[kind]
            raise TooManyOpen(
                f"this token already has {cap} {what}, the most it may hold at once ({setting}); "
                "close one, or wait for one to end, and retry",
                kind=kind,
                limit=cap,
            )
        self._held[key] = self._held.get(key, 0) + 1
        return Slot(self, key)

    @contextmanager
    def hold(self, kind: str, credential_id: int | None) -> Iterator[Slot]:
        slot = self.take(kind, credential_id)
        try:
            yield slot
        finally:
            slot.release()

    def give_back(self, key: tuple[str, int]) -> None:
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)
