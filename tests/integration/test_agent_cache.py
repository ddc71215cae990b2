"""The agents a message names are read once per bound (`ServiceContext.agents`), as a credential is;
registering or retiring one on this process is seen at once, another process's change within the bound."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound, PermissionDenied
from vibe_ensemble.services import Services
from vibe_ensemble.services.base import TimedCache
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import projects as project_store


@pytest.fixture
async def team(services: Services, admin: Caller) -> Services:
    await services.agents.register(admin, name="lead", role=AgentRole.COORDINATOR)
    for name in ("w1", "w2"):
        await services.agents.register(admin, name=name)
    return services


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names each read of the agents' table looked up (a spy on `agent_store.find_many`)."""
    seen: list[list[str]] = []
    real = agent_store.find_many

    async def find_many(conn: Any, project_id: int, names: list[str]) -> Any:
        seen.append(list(names))
        return await real(conn, project_id, names)

    monkeypatch.setattr(agent_store, "find_many", find_many)
    return seen


def clock(team: Services) -> Callable[[float], None]:
    """Sets the agent cache's clock (monotonic seconds)."""
    now = [0.0]
    team.ctx.agents.clock = lambda: now[0]
    return lambda t: now.__setitem__(0, t)


async def _retire_behind_the_service(team: Services, name: str) -> None:
    """As another replica (or a CLI command) would: the row changes, this process's cache is not told."""
    async with team.ctx.db.write() as conn:
        project = await project_store.by_slug(conn, "default")
        agent = await agent_store.get(conn, project.id, name)
        await agent_store.retire(conn, agent.id, datetime.now(UTC))


async def send(team: Services, caller: Caller, to: list[str], agent: str | None = "lead") -> None:
    await team.messages.send(caller, agent=agent, to=to, subject="s", body="b")


async def test_a_message_reads_the_agents_it_names_once_per_bound(
    team: Services, admin: Caller, lookups: list[list[str]]
) -> None:
    set_time = clock(team)
    await send(team, admin, ["w1", "w2"])
    assert lookups == [["lead", "w1", "w2"]]  # one statement for the sender and its recipients
    await send(team, admin, ["w1", "w2"])
    await send(team, admin, ["w2"])
    assert lookups == [["lead", "w1", "w2"]]  # known: no statement
    set_time(team.ctx.agents.ttl_s + 0.5)  # past the bound since they were read
    await send(team, admin, ["w1", "lead"], agent="w2")
    assert lookups == [["lead", "w1", "w2"], ["w2", "w1", "lead"]]
    inbox = await team.messages.fetch_inbox(admin, agent="w2")
    assert [i.message.sender for i in inbox.items] == ["lead"] * 3  # the mail went where it was sent


async def test_retiring_an_agent_here_is_seen_at_once(team: Services, admin: Caller) -> None:
    await send(team, admin, ["w1", "w2"])  # lead, w1 and w2 now known
    await team.agents.retire(admin, name="w2")
    with pytest.raises(InvalidInput, match="to: no active agent named 'w2'"):
        await send(team, admin, ["w1", "w2"])
    await team.agents.retire(admin, name="lead")  # the sender too
    with pytest.raises(NotFound, match="'lead' is retired"):
        await send(team, admin, ["w1"])
    await team.agents.register(admin, name="w2")  # registered again: its retirement undone
    await send(team, admin, ["w2"], agent="w1")


async def test_a_role_changed_here_is_seen_at_once(team: Services, admin: Caller) -> None:
    """A worker team token may act as a worker, not as a coordinator: once w1 is made a
    coordinator, the token's next message as w1 is refused, whatever was known of w1 before."""
    _, secret = await team.tokens.create(admin, role=TokenRole.WORKER, project="default")
    workers = await team.tokens.authenticate(secret)
    await send(team, workers, ["w2"], agent="w1")  # w1 known, as a worker
    await team.agents.register(admin, name="w1", role=AgentRole.COORDINATOR)
    with pytest.raises(PermissionDenied, match="'w1' is a coordinator"):
        await send(team, workers, ["w2"], agent="w1")


async def test_another_process_retiring_an_agent_is_seen_within_the_bound(
    team: Services, admin: Caller
) -> None:
    set_time = clock(team)
    await send(team, admin, ["w1", "w2"])
    await _retire_behind_the_service(team, "w2")
    await send(team, admin, ["w2"])  # within the bound, as a revoked token on another replica
    set_time(team.ctx.agents.ttl_s + 0.5)
    with pytest.raises(InvalidInput, match="to: no active agent named 'w2'"):
        await send(team, admin, ["w2"])


async def test_a_zero_bound_reads_the_agents_every_time(
    team: Services, admin: Caller, lookups: list[list[str]]
) -> None:
    team.ctx.agents.ttl_s = 0  # VIBE_CREDENTIAL_CACHE_S=0
    await send(team, admin, ["w1"])
    await _retire_behind_the_service(team, "w1")
    with pytest.raises(InvalidInput, match="to: no active agent named 'w1'"):
        await send(team, admin, ["w1"])
    assert len(lookups) == 2


def test_a_read_that_began_before_a_clear_is_not_kept() -> None:
    """A message's read of an agent, begun before a retirement committed and answered after the
    cache was emptied for it, would keep the agent as it was: it is not kept."""
    cache: TimedCache[str, int] = TimedCache(5.0)
    generation = cache.generation  # the read begins
    cache.clear()  # a change commits meanwhile
    cache.put_unless_cleared("w1", 1, generation)
    assert cache.get("w1") is None
    cache.put_unless_cleared("w1", 2, cache.generation)
    assert cache.get("w1") == 2


async def test_a_lookup_a_change_overtook_is_not_kept(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a read of the agents can begin before a retirement commits and answer after the
    cache was emptied for it: what it read is used for its own message, never kept for the next."""
    reads: list[list[str]] = []
    real = agent_store.find_many

    async def overtaken(conn: Any, project_id: int, names: list[str]) -> Any:
        found = await real(conn, project_id, names)
        team.ctx.agents.clear()  # an agent was registered or retired meanwhile
        reads.append(list(names))
        return found

    monkeypatch.setattr(agent_store, "find_many", overtaken)
    await send(team, admin, ["w1"])
    await send(team, admin, ["w1"])
    assert reads == [["lead", "w1"], ["lead", "w1"]]  # read again: the first read was not kept
