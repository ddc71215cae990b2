"""What every service shares: the database, the event hub, the clock, and helpers."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from vibe_ensemble.auth import tokens
from vibe_ensemble.auth.concurrency import ConcurrencyLimits
from vibe_ensemble.auth.ratelimit import RateLimiter
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.domain.events import CATALOGUE, EventType
from vibe_ensemble.domain.models import Agent, Project
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.events.hub import EventHub
from vibe_ensemble.events.sequencer import EventSequencer
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.metrics import TransactionTimer
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import audit as audit_store
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store import projects as project_store
from vibe_ensemble.store.database import Connection, Database

K = TypeVar("K")
V = TypeVar("V")


class TimedCache(Generic[K, V]):
    """Values read from the database, each trusted for `ttl_s` seconds after its read (0: none kept).

    A hit does not extend its own trust; at `max_entries` the cache starts again empty."""

    def __init__(
        self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_entries = max_entries
        self._found: dict[K, tuple[float, V]] = {}
        self.generation = 0  # how many times the cache was cleared (`put_unless_cleared`)

    def get(self, key: K) -> V | None:
        hit = self._found.get(key)
        if hit is None:
            return None
        if self.clock() - hit[0] > self.ttl_s:
            del self._found[key]
            return None
        return hit[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._found) >= self.max_entries:
            self._found.clear()
        self._found[key] = (self.clock(), value)

    def clear(self) -> None:
        self._found.clear()
        self.generation += 1

    def put_unless_cleared(self, key: K, value: V, generation: int) -> None:
        """`put`, unless the cache was cleared since `generation` (read before the value was): a read
        that began before a change and ended after its clear (on PostgreSQL the read awaits its
        answer) would keep what the change replaced. The credential and agent caches put this way."""
        if generation == self.generation:
            self.put(key, value)


# An agent's presence is written at most this often (and at most a quarter of the offline window):
# often enough that an agent calling the server never looks silent, rarely enough to cost nothing.
PRESENCE_RESOLUTION_S = 30.0


def open_database(settings: Settings) -> Database:
    """The database the settings name, with their pool size and SQLite durability (the server, the
    `migrate` command and the doctor open it alike)."""
    return Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


Heard = tuple[int, str]  # an agent, by project id and name


class Presence:
    """Which agents were heard from lately: an agent calling the server is present.

    Every call acting as an agent (its bound token's, or a team token's naming it; MCP or REST, a
    held `wait_for_messages` too) tells `heard`; a dictionary look-up decides whether its presence
    is due a write: at most once per `interval_s` (30 s, or a quarter of the offline window when
    that is shorter) an agent and process, the write runs beside the request (`refresh`, given by
    the agent service), never in its way. Several replicas each write theirs: that is fine.
    """

    MAX_ENTRIES = 100_000

    def __init__(self, offline_after_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.offline_after_s = offline_after_s
        self.interval_s = min(PRESENCE_RESOLUTION_S, offline_after_s / 4)
        self.clock = clock
        self.refresh: Callable[[int, str], Coroutine[Any, Any, None]] | None = None
        self._heard: dict[Heard, float] = {}
        self._writing: dict[Heard, asyncio.Task[None]] = {}

    def heard(self, project_id: int, name: str) -> None:
        """The agent `name` of the project called: write its presence when it is due."""
        key = (project_id, name)
        now = self.clock()
        last = self._heard.get(key)
        if last is not None and now - last < self.interval_s:
            return
        if len(self._heard) >= self.MAX_ENTRIES:
            self._heard.clear()
        self._heard[key] = now
        if self.refresh is None or key in self._writing:
            return
        # Beside the request, not part of it: none of its context (its log fields, its place in the
        # app's gate), as a credential's use is written (services/tokens.py).
        task = asyncio.create_task(
            self.refresh(project_id, name), name="vibe-presence", context=contextvars.Context()
        )
        self._writing[key] = task
        task.add_done_callback(lambda _: self._writing.pop(key, None))

    def written(self, project_id: int, name: str) -> None:
        """The agent's presence was just written by the call itself (a heartbeat, a registration)."""
        self._heard[(project_id, name)] = self.clock()

    async def settle(self) -> None:
        """Let the presence being written finish (before the database is closed)."""
        if self._writing:
            await asyncio.gather(*self._writing.values(), return_exceptions=True)


@dataclass
class ServiceContext:
    db: Database
    hub: EventHub = field(default_factory=EventHub)
    default_project: str = "default"
    clock: Callable[[], datetime] = utcnow
    limiter: RateLimiter | None = None  # requests per credential; None: unlimited
    # feeds and held waits per credential (auth/concurrency.py); the default caps nothing
    open_limits: ConcurrencyLimits = field(default_factory=lambda: ConcurrencyLimits({}))
    # Seconds a verified credential is trusted without reading it again (0: read every request).
    # Revoking on this process takes effect at once; on another replica within this bound.
    credential_cache_s: float = 5.0
    # Projects never change once created, but a restore (`backup restore --force` beside a running
    # server) takes away those made since its backup, and the next project made takes such a one's
    # id: the slug -> project mapping is trusted for the credential cache's bound only.
    projects: TimedCache[str, Project] = field(init=False)
    # The agents a message names (sender and recipients: their ids, roles and retirement), by project
    # and name, trusted as long (`Service.named_agents`): emptied on this process by every write that
    # registers or retires an agent (`Transaction.agents_changed`); another process's change is seen
    # within the bound, as a revocation is.
    agents: TimedCache[tuple[int, str], Agent] = field(init=False)
    # Agents heard from: their presence, written at most every `presence.interval_s` (see Presence)
    presence: Presence = field(default_factory=Presence)
    # PostgreSQL: gives committed events their ids (events/sequencer.py); None on SQLite
    sequencer: EventSequencer | None = field(init=False)

    def __post_init__(self) -> None:
        self.projects = TimedCache(self.credential_cache_s)
        self.agents = TimedCache(self.credential_cache_s)
        self.sequencer = None if self.db.is_sqlite else EventSequencer(self.db)


# The events of a change to what `ServiceContext.agents` keeps of an agent (its id, role, retirement)
AGENT_CHANGES = frozenset({EventType.AGENT_REGISTERED, EventType.AGENT_RETIRED})


def new_event(type_: EventType, actor: str, project_id: int | None, **payload: Any) -> event_store.NewEvent:
    """An event of a catalogued type; its payload must match the catalogue."""
    CATALOGUE[type_].check(payload)
    return event_store.NewEvent(type_.value, actor, payload, project_id)


class Transaction:
    """A write transaction that collects events and appends them last, in one commit."""

    def __init__(self, conn: Connection, now: datetime, *, one_statement: bool = False) -> None:
        self.conn = conn
        self.now = now
        # A write that is one statement (`Service.write(one_statement=True)`) writes its events itself:
        # one appended or audited here would be a second statement.
        self.one_statement = one_statement
        self._events: list[event_store.NewEvent] = []
        # The newest event's id, to publish once committed; None when there is none, or on
        # PostgreSQL, where ids are given after the commit and the bridge publishes them.
        self.newest_event: int | None = None
        # PostgreSQL: events were written, to be given their ids once committed (store/events.append)
        self.events_to_order = False
        self._audits: list[audit_store.NewAudit] = []
        # An agent was registered (or registered again: its role, a retirement undone) or retired:
        # what `ServiceContext.agents` holds may be out of date once this commits.
        self.agents_changed = False

    def emit(self, type_: EventType, actor: str, project_id: int | None, **payload: Any) -> None:
        """Append an event of a catalogued type at commit; its payload must match the catalogue."""
        self.append(new_event(type_, actor, project_id, **payload))

    def append(self, event: event_store.NewEvent) -> None:
        """Append an event (`new_event`) at commit."""
        self._second_statement()
        self._events.append(event)
        if event.type in AGENT_CHANGES:
            self.agents_changed = True

    def audit(self, caller: Caller, action: str, outcome: str = "ok", **details: Any) -> None:
        """Record a security-relevant act in the audit log, in this transaction (tokens are redacted)."""
        self._second_statement()
        details = tokens.scrub({**details, "credential_id": caller.credential_id, "role": caller.role.value})
        self._audits.append(audit_store.NewAudit(caller.display, action, outcome, caller.remote, details))

    def _second_statement(self) -> None:
        if self.one_statement:
            raise RuntimeError("a one-statement write writes its events itself, and no audit record")

    async def flush_audit(self) -> None:
        await audit_store.append(self.conn, self.now, self._audits)

    async def flush_events(self) -> None:
        self.newest_event = await event_store.append(self.conn, self.now, self._events)
        if self._events and self.newest_event is None:
            self.events_to_order = True


class Service:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        # Timed at this boundary (not per statement): `vibe_db_transaction_seconds{kind,service}`.
        name = type(self).__name__.removesuffix("Service").lower() or "service"
        self._write_timer = TransactionTimer("write", name)
        self._read_timer = TransactionTimer("read", name)

    @asynccontextmanager
    async def write(self, *, one_statement: bool = False) -> AsyncIterator[Transaction]:
        """One transaction for a change and its events; the hub hears of them after commit.

        `one_statement` (`Database.write`): the change is a single statement that writes its events
        itself (on PostgreSQL it commits by itself, without BEGIN and COMMIT); the transaction
        refuses an event or an audit record, which would be a second statement."""
        started = self._write_timer.begin()
        tx: Transaction | None = None
        try:
            async with self.ctx.db.write(one_statement=one_statement) as conn:
                tx = Transaction(conn, self.ctx.clock(), one_statement=one_statement)
                yield tx
                await tx.flush_audit()
                await tx.flush_events()
        finally:
            self._write_timer.end(started)
            if tx is not None and tx.agents_changed:  # (emptied for nothing when it rolled back: harmless)
                self.ctx.agents.clear()
        if tx is not None and tx.newest_event is not None:
            self.ctx.hub.publish(tx.newest_event)
        if tx is not None and tx.events_to_order and self.ctx.sequencer is not None:
            await self.ctx.sequencer.committed()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Transaction]:
        """A read (`Database.read`) shaped like a write transaction (its events are never written)."""
        async with self.snapshot() as conn:
            yield Transaction(conn, self.ctx.clock())

    @asynccontextmanager
    async def snapshot(self, *, bound_s: float | None = None) -> AsyncIterator[Connection]:
        """A read's connection (`Database.read`, bounded by `bound_s` when given), for reads that
        need no `Transaction`."""
        started = self._read_timer.begin()
        try:
            async with self.ctx.db.read(bound_s=bound_s) as conn:
                yield conn
        finally:
            self._read_timer.end(started)

    async def project(
        self, conn: Connection, caller: Caller, requested: str | None, *, present: bool = True
    ) -> Project:
        """The project a call acts on, after the token's scope is applied.

        A call with an agent-bound token is its agent's: the agent is heard from (`Presence`), unless
        `present` is False (a heartbeat or a registration, which write presence themselves)."""
        if requested is not None and len(requested) > rules.MAX_NAME:  # no project's: never echoed back
            rule = f"must be at most {rules.MAX_NAME} characters (got {len(requested)})"
            raise InvalidInput("project", rule)
        if requested is not None and "\x00" in requested:  # PostgreSQL's text cannot hold one
            raise InvalidInput("project", "must not contain NUL characters")
        slug = caller.project_slug(requested, self.ctx.default_project)
        known = self.ctx.projects.get(slug)
        if known is None:
            known = await project_store.by_slug(conn, slug)
            self.ctx.projects.put(slug, known)
        if present and caller.agent is not None and allowed(caller.role, Op.AGENT_ACT):
            self.ctx.presence.heard(known.id, caller.agent)
        return known

    async def check_actor(self, conn: Connection, project_id: int, caller: Caller, agent: str | None) -> None:
        """A call that acts as an agent (a bound token's, or a team token's `agent`) needs that
        agent registered, and not retired, in the project: no token acts under a made-up name."""
        if caller.acts_as_agent(agent):
            await self.acting_as(conn, project_id, caller, caller.acting_agent(agent))

    async def acting_as(
        self,
        conn: Connection,
        project_id: int,
        caller: Caller,
        name: str,
        *,
        lock: bool = False,
        present: bool = True,
    ) -> Agent:
        """The agent `name` a call acts as: registered and active (`agent_store.get`), and, for a team
        token, one its role may speak for. A worker team token acts for the workers and observers of
        its project, not as a coordinator: the team's lead is not impersonated by a shared token (a
        bound token is its agent, bound by an admin). `lock`: for a write that gives the agent a lease
        or an issue, its row stays locked against a retirement until the transaction ends
        (`agent_store.find`).

        A token that may act as agents (`agent.act`) calling as this one makes it heard from
        (`acts_as`), unless `present` is False (see `project`); a viewer reading an agent's briefing
        does not."""
        agent = await agent_store.get(conn, project_id, name, lock=lock)
        return self.acts_as(caller, project_id, agent, present=present)

    async def named_agents(self, conn: Connection, project_id: int, names: list[str]) -> dict[str, Agent]:
        """The registered agents among `names` (retired ones included), by name: those read within
        `VIBE_CREDENTIAL_CACHE_S` from `ServiceContext.agents`, the others in one statement. For what a
        message needs of its sender and recipients (ids, roles, retirement), not their presence. The
        records are shared with later messages: read them, never change them."""
        cache = self.ctx.agents
        found: dict[str, Agent] = {}
        missing: list[str] = []
        for name in names:
            agent = cache.get((project_id, name))
            if agent is None:
                missing.append(name)
            else:
                found[name] = agent
        if missing:
            generation = cache.generation
            for name, agent in (await agent_store.find_many(conn, project_id, missing)).items():
                cache.put_unless_cleared((project_id, name), agent, generation)
                found[name] = agent
        return found

    def acts_as(self, caller: Caller, project_id: int, agent: Agent, *, present: bool = True) -> Agent:
        """`agent` (found registered and active) as the one a call acts as: refused when `caller` may
        not act as it (`may_act_as`); else, when the token may act as agents (`agent.act`), the agent
        is heard from (`Presence`), unless `present` is False. Every call naming its agent comes
        here (`acting_as`, or a read of several agents at once)."""
        may_act_as(caller, agent)
        if present and allowed(caller.role, Op.AGENT_ACT):
            self.ctx.presence.heard(project_id, agent.name)
        return agent


def may_act_as(caller: Caller, agent: Agent) -> Agent:
    """`agent`, unless it is a coordinator and `caller` a team token whose role may not lead."""
    may_lead = caller.agent is not None or allowed(caller.role, Op.AGENT_COORDINATE)
    if agent.role == AgentRole.COORDINATOR and not may_lead:
        raise PermissionDenied(
            f"agent {agent.name!r} is a coordinator; a {caller.role.value} team token cannot act as it "
            "(use the coordinator's own token)",
            agent=agent.name,
            role=caller.role.value,
        )
    return agent
