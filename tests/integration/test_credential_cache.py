"""The credential cache: a verified token is read once per bound, and revoking is still immediate here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import Unauthenticated
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import credentials as credential_store
from vibe_ensemble.store import faults


async def _revoke_behind_the_service(runtime: Runtime, token_id: int) -> None:
    """As another replica would: the row changes, this process's cache is not told."""
    async with runtime.db.write() as conn:
        await credential_store.revoke(conn, token_id, datetime.now(UTC))


async def test_a_verified_token_is_trusted_for_the_bound(runtime: Runtime, admin: Caller) -> None:
    tokens = runtime.services.tokens
    cred, secret = await tokens.create(admin, role=TokenRole.VIEWER)
    assert (await tokens.authenticate(secret)).credential_id == cred.id
    await _revoke_behind_the_service(runtime, cred.id)
    # Within VIBE_CREDENTIAL_CACHE_S (5 s by default) another replica's revocation is not yet seen...
    assert (await tokens.authenticate(secret)).credential_id == cred.id
    # ...and once the cache forgets it (as it does after the bound) the token is refused.
    tokens.cache.clear()
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(secret)


async def test_revoking_here_takes_effect_at_once(runtime: Runtime, admin: Caller) -> None:
    tokens = runtime.services.tokens
    cred, secret = await tokens.create(admin, role=TokenRole.VIEWER)
    await tokens.authenticate(secret)
    await tokens.revoke(admin, cred.id)
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(secret)


async def test_a_zero_bound_reads_every_request(runtime: Runtime, admin: Caller) -> None:
    tokens = runtime.services.tokens
    tokens.cache.ttl_s = 0
    cred, secret = await tokens.create(admin, role=TokenRole.VIEWER)
    await tokens.authenticate(secret)
    await _revoke_behind_the_service(runtime, cred.id)
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(secret)


async def test_a_cached_token_still_expires(runtime: Runtime, admin: Caller) -> None:
    tokens = runtime.services.tokens
    expires = datetime.now(UTC) + timedelta(hours=1)
    _, secret = await tokens.create(admin, role=TokenRole.VIEWER, expires_at=expires)
    await tokens.authenticate(secret)  # now cached
    runtime.services.ctx.clock = lambda: expires + timedelta(seconds=1)
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(secret)


async def test_a_busy_token_is_read_again_after_the_bound(runtime: Runtime, admin: Caller) -> None:
    """Hits do not extend the trust: a token used constantly is still re-read every bound."""
    tokens = runtime.services.tokens
    now = [0.0]
    tokens.cache.clock = lambda: now[0]
    cred, secret = await tokens.create(admin, role=TokenRole.VIEWER)
    await tokens.authenticate(secret)  # read from the database at t=0
    await _revoke_behind_the_service(runtime, cred.id)
    for step in range(1, 5):  # used every second, within the 5 s bound
        now[0] = float(step)
        await tokens.authenticate(secret)
    now[0] = tokens.cache.ttl_s + 0.5  # past the bound since the database read, not since the last hit
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(secret)


async def test_a_tokens_last_use_is_written_down_at_most_once_a_minute(
    runtime: Runtime, admin: Caller
) -> None:
    """`last_used_at` (what `token list` and GET /tokens show) was never written: every token read
    "never used". A use is written beside the request when the last one on record is a minute old."""
    tokens = runtime.services.tokens
    tokens.cache.ttl_s = 0  # every request reads the credential (as one does after the cache's bound)
    start = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    runtime.services.ctx.clock = lambda: start
    cred, secret = await tokens.create(admin, role=TokenRole.VIEWER)

    async def last_used() -> datetime | None:
        await tokens.settle()
        [listed] = [c for c in await tokens.list(admin) if c.id == cred.id]
        return listed.last_used_at

    assert await last_used() is None
    await tokens.authenticate(secret)
    assert await last_used() == start
    runtime.services.ctx.clock = lambda: start + timedelta(seconds=30)
    await tokens.authenticate(secret)
    assert await last_used() == start  # within the minute: not written again
    runtime.services.ctx.clock = lambda: start + timedelta(seconds=61)
    await tokens.authenticate(secret)
    assert await last_used() == start + timedelta(seconds=61)


async def test_while_the_database_is_known_down_a_recent_token_is_taken_without_asking_it(
    runtime: Runtime, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung database answers nothing: once a request found it down, a recently verified token is
    taken at once, not after the token check has waited the request's whole bound."""
    tokens = runtime.services.tokens
    cred, secret = await tokens.create(admin, role=TokenRole.VIEWER)
    assert (await tokens.authenticate(secret)).credential_id == cred.id  # verified, remembered
    tokens.cache.clear()
    asked: list[str] = []
    real_snapshot = tokens.snapshot

    def snapshot(**bounded: float | None) -> object:
        asked.append("snapshot")
        return real_snapshot(**bounded)

    monkeypatch.setattr(tokens, "snapshot", snapshot)
    log = faults.FaultLog()
    monkeypatch.setattr(faults, "FAULTS", log)
    log.failed("unavailable", TimeoutError("the database did not answer"))
    assert (await tokens.authenticate(secret)).credential_id == cred.id
    assert asked == []
    # a token this process has not verified is still looked up (and the database answers here)
    _, other = await tokens.create(admin, role=TokenRole.VIEWER)
    tokens.cache.clear()
    await tokens.authenticate(other)
    assert asked == ["snapshot"]
    # once a request got through, every token is read from the database again
    log.succeeded(write=False)
    tokens.cache.clear()
    await tokens.authenticate(secret)
    assert asked == ["snapshot", "snapshot"]


async def test_a_read_a_revocation_overtook_is_not_kept(
    runtime: Runtime, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a token's read can begin before a revocation here commits and answer after it
    emptied the cache: the request it was read for goes on, but the read is not kept for the next."""
    tokens = runtime.services.tokens
    _, secret = await tokens.create(admin, role=TokenRole.VIEWER)
    reads: list[str] = []
    real = credential_store.by_hash

    async def overtaken(conn: Any, token_hash: str) -> Any:
        found = await real(conn, token_hash)
        tokens.cache.clear()  # a token was revoked here meanwhile
        reads.append(token_hash)
        return found

    monkeypatch.setattr(credential_store, "by_hash", overtaken)
    await tokens.authenticate(secret)
    await tokens.authenticate(secret)
    assert len(reads) == 2  # read again: the first read was not kept
