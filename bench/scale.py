"""Does a call cost the same with a big database? Reads timed against large tables, in process.

    python bench/scale.py                                  # 100k issues, 1M messages, 50k entries
    python bench/scale.py --issues 1000 --messages 10000 --knowledge 500     # a quick look
    python bench/scale.py --database-url postgresql://…/empty_db            # written to!

The tables are filled with plain bulk INSERTs (20 agents, 4 projects; three comments an issue, and
every other issue waiting on another; each message to one agent, a fifth of them unread; on
PostgreSQL then VACUUM ANALYZE, as autovacuum would soon do), then each read is run `--calls` times
through the services, as an agent-bound caller would: the issue list, the ready list, one issue
(with its comments and dependencies), the inbox (all mail, and unread only, which also counts the
unread), a knowledge search, the mail threads, one thread and a mail search (subjects, as a worker
searches; subjects and bodies, as an overseer does); the searches for words every row holds, then
for a word in one row of a thousand, for one in none, and for one in a tenth of the other
projects' mail and none of this one's, and knowledge searches narrowed to a kind
that every entry has and to a tag that half of them carry (the windows of the entries that pass).
It prints p50/p95 per read and how many rows it found, and the query plans: on SQLite of the inbox,
issue-list and knowledge-search statements; on PostgreSQL of every statement each read ran, as its
generic plan runs it (`EXPLAIN ANALYZE`: each node with the rows it gave, so a page's reads show as
a page). Figures are printed (and with `--json` written, with the machine's facts), never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import facts  # bench/facts.py
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import AgentRole, IssueStatus, KnowledgeKind, TokenRole
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import knowledge as knowledge_store
from vibe_ensemble.store import knowledge_rank, prepared
from vibe_ensemble.store.tables import (
    agents,
    comments,
    issue_dependencies,
    issues,
    knowledge,
    message_recipients,
    messages,
    projects,
)

AGENTS = 20
PROJECTS = ["default", "alpha", "beta", "gamma"]
WORDS = "cache lease merge index parser schema token build deploy retry socket queue worker review".split()  # noqa: SIM905
CHUNK = 20_000
# In one message and one knowledge entry of a thousand; ABSENT in none. Searched beside the common
# words, because a search's cost can hang on how many rows hold its words: on PostgreSQL a word no
# message held once cost 400 ms where a common one cost 5 (bench/RESULTS.md, thirty-fifth round).
RARE, ABSENT = "incident", "zeppelin"
# In one message of ten of the other projects, none of `default`'s: a search in `default` finds
# nothing, however many of the others' messages hold it (PostgreSQL once read all of those: 30 ms).
ELSEWHERE = "airship"


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def fill(conn: sa.Connection, n_issues: int, n_messages: int, n_knowledge: int) -> None:
    """Bulk rows in every project (the reads are timed in `default`, the first)."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    pids = {r.slug: r.id for r in conn.execute(sa.select(projects.c.id, projects.c.slug))}
    aids = [
        r.id
        for r in conn.execute(
            sa.select(agents.c.id).where(agents.c.project_id == pids["default"]).order_by(agents.c.id)
        )
    ]
    project_ids = [pids[p] for p in PROJECTS]

    def insert(table: sa.Table, n: int, make: Callable[[int], dict[str, Any]]) -> None:
        for start in range(0, n, CHUNK):
            conn.execute(table.insert(), [make(i) for i in range(start, min(n, start + CHUNK))])

    first_issue = conn.execute(sa.select(sa.func.coalesce(sa.func.max(issues.c.id), 0))).scalar_one() + 1
    insert(
        issues,
        n_issues,
        lambda i: {
            "project_id": project_ids[i % len(project_ids)],
            "title": _text(rng, 5),
            "body": _text(rng, 20),
            "status": rng.choice(["open", "open", "in_progress", "closed", "closed", "closed"]),
            "priority": rng.choice(["p0", "p1", "p2", "p3"]),
            "labels": [],
            "version": 1,
            "created_at": now - timedelta(seconds=n_issues - i),
            "updated_at": now,
        },
    )
    # Three comments an issue; every other issue waits on the issue four before it (its project's)
    insert(
        comments,
        3 * n_issues,
        lambda i: {
            "issue_id": first_issue + i % n_issues,
            "author": "bench",
            "body": _text(rng, 12),
            "created_at": now,
        },
    )
    waiting = list(range(4, n_issues, 2))
    insert(
        issue_dependencies,
        len(waiting),
        lambda i: {"issue_id": first_issue + waiting[i], "depends_on_id": first_issue + waiting[i] - 4},
    )
    first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(messages.c.id), 0))).scalar_one() + 1
    insert(
        messages,
        n_messages,
        lambda i: {
            "project_id": pids["default"] if i % 2 == 0 else project_ids[i % len(project_ids)],
            "sender": "bench",
            "subject": _text(rng, 4),
            "body": _text(rng, 30)
            + (f" {RARE}" if i % 1000 == 0 else "")
            + (f" {ELSEWHERE}" if i % 2 == 1 and i % 10 == 1 else ""),
            "thread_id": f"t-{i // 10}",
            "importance": "normal",
            "ack_required": False,
            "to_role": None,
            "broadcast": False,
            "created_at": now - timedelta(seconds=n_messages - i),
        },
    )
    insert(
        message_recipients,
        n_messages,
        lambda i: {
            "message_id": first + i,
            "agent_id": aids[i % len(aids)],
            "read_at": None if i % 5 == 0 else now,
        },
    )
    insert(
        knowledge,
        n_knowledge,
        lambda i: {
            "project_id": project_ids[i % len(project_ids)],
            "kind": "note",
            "title": _text(rng, 5),
            "body": _text(rng, 60) + (f" {RARE}" if i % 1000 == 0 else ""),
            "tags": ["Ops"] if i // len(project_ids) % 2 == 0 else [],  # half of each project's
            "tag_keys": ["ops"] if i // len(project_ids) % 2 == 0 else [],
            "issue_ids": [],
            "author": "bench",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        },
    )


async def timed(
    name: str,
    calls: int,
    fn: Callable[[], Awaitable[Any]],
    out: dict[str, Any],
    ran: Statements | None = None,
) -> None:
    with ran.of(name) if ran else contextlib.nullcontext():
        found = await fn()  # warm; what it found is printed, so an empty answer cannot pass for a fast one
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    items = getattr(found, "items", found)
    size = f"{len(items)} rows" if isinstance(items, list) else "1 row"
    print(f"  {name:28} p50 {statistics.median(times):7.2f} ms   p95 {p95:7.2f} ms   ({size})")
    rows = len(items) if isinstance(items, list) else 1
    out[name] = {"p50_ms": round(statistics.median(times), 3), "p95_ms": round(p95, 3), "rows": rows}


def plans(conn: sa.Connection, agent_id: int, project_id: int) -> dict[str, str]:
    """SQLite's plan for the inbox page, the unread count, the open-issue page, the ready page and
    the knowledge search."""
    queries = {
        "inbox page": "SELECT m.id FROM messages m JOIN message_recipients r ON r.message_id = m.id "
        f"WHERE r.agent_id = {agent_id} AND r.message_id > 0 ORDER BY r.message_id LIMIT 51",
        "unread count": "SELECT count(*) FROM message_recipients "
        f"WHERE agent_id = {agent_id} AND read_at IS NULL",
        "unread page": "SELECT r.message_id FROM message_recipients r "
        f"WHERE r.agent_id = {agent_id} AND r.read_at IS NULL AND r.message_id > 0 "
        "ORDER BY r.message_id LIMIT 51",
        "open issues page": f"SELECT id FROM issues WHERE project_id = {project_id} AND status = 'open' "
        "ORDER BY id LIMIT 51",
    }
    found = {}
    for name, sql in queries.items():
        found[name] = " / ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    # The ready page as the server runs it: its own statement, this project, a page of 50.
    ready = issue_store._READY_IN.explain(conn, {"project_id": project_id, "limit": 50})
    found["ready issues page"] = " / ".join(ready)
    # The knowledge search as the server runs it (store/knowledge_rank.py) for the bench's query:
    # the ranking of each word's newest matches on the project's FTS5 table, then the best ten read
    # with their snippets.
    marks = (knowledge_store.MARK_START, knowledge_store.MARK_END, knowledge_store.ELLIPSIS)
    phrases = [knowledge_store.fts5_query([w]) for w in knowledge_store.terms("lease merge")]
    match = knowledge_rank.matching(phrases)
    for name, search in (
        (
            "knowledge search, ranking",
            knowledge_rank.ranking(
                project_id, match, knowledge_rank.windows(phrases), knowledge_rank.WINDOW, 10
            ),
        ),
        ("knowledge search, hits", knowledge_rank.hits(project_id, match, list(range(1, 11)), marks)),
    ):
        compiled = search.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        found[name] = " / ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    for name, plan in found.items():
        print(f"  plan, {name}: {plan}")
    return found


async def vacuum(url: str) -> None:
    """What autovacuum does soon after a bulk load: the planner's statistics (ANALYZE), and the
    visibility map (VACUUM), without which an index-only scan (the unread count) reads the heap."""
    engine = create_async_engine(
        sa.engine.make_url(url).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await engine.dispose()


class Statements:
    """PostgreSQL: the statements each read ran on its first call, with their arguments (`of`), as
    the server sent them: its prepared statements (`Plan.run_asyncpg`, patched while this records)
    and SQLAlchemy's (an engine event)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.by_read: dict[str, list[tuple[str, list[Any]]]] = {}
        self._read: str | None = None
        self._engine = engine
        self._run = prepared.Plan.run_asyncpg
        statements = self

        async def run_asyncpg(plan: prepared.Plan, conn: Any, parameters: Any) -> Any:
            if parameters is None or isinstance(parameters, Mapping):
                statements.add(*plan.arguments(parameters))
            return await statements._run(plan, conn, parameters)

        prepared.Plan.run_asyncpg = run_asyncpg  # type: ignore[method-assign]
        sa.event.listen(engine, "before_cursor_execute", self._executed)

    def _executed(self, conn: Any, cursor: Any, sql: str, parameters: Any, context: Any, many: bool) -> None:
        if not many:
            self.add(sql, list(parameters or ()))

    def add(self, sql: str, args: list[Any]) -> None:
        if self._read is not None:
            self.by_read[self._read].append((sql, args))

    @contextlib.contextmanager
    def of(self, read: str) -> Iterator[None]:
        self._read, self.by_read[read] = read, []
        try:
            yield
        finally:
            self._read = None

    def stop(self) -> None:
        prepared.Plan.run_asyncpg = self._run  # type: ignore[method-assign]
        sa.event.remove(self._engine, "before_cursor_execute", self._executed)


async def postgres_plans(url: str, by_read: dict[str, list[tuple[str, list[Any]]]]) -> dict[str, list[str]]:
    """Each read's statements as PostgreSQL runs them once they are prepared: the generic plan
    (asyncpg prepares each statement, and PostgreSQL plans it for any arguments after five runs),
    run with the read's arguments (`EXPLAIN ANALYZE EXECUTE`), printed a line a statement: each
    node and the rows it gave (xloops), so a page's reads show as a page's rows."""
    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    found: dict[str, list[str]] = {}
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        for read, statements in by_read.items():
            found[read] = []
            for sql, args in statements:
                await conn.execute(f"PREPARE planned AS {sql}")
                values = ", ".join(_literal(a) for a in args)
                explain = f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE planned({values})"
                lines = [r[0] for r in await conn.fetch(explain)]
                await conn.execute("DEALLOCATE planned")
                found[read].append(_nodes(lines))
                print(f"  plan, {read} ({len(found[read])}): {found[read][-1]}")
    finally:
        await conn.close()
    return found


def _literal(value: Any) -> str:
    """An argument written into `EXECUTE` (a utility statement takes no parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):  # (empty: of the parameter's type)
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]" if value else "'{}'"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


def _nodes(lines: list[str]) -> str:
    """A plan's nodes on one line, each with the rows it gave (xloops when more than one); an
    InitPlan's single value (a search's query, worked out once) left out."""
    nodes = []
    for line in lines:
        # (PostgreSQL 18 writes rows as a mean over loops, with two decimals)
        found = re.fullmatch(r"(?:->\s*)?(.*) \(actual rows=([\d.]+) loops=(\d+)\)", line.strip())
        if found is None:
            continue
        node, rows, loops = found.groups()
        rows = rows.removesuffix(".00")
        if node == "Result" and rows == "1":
            continue
        nodes.append(f"{node} ({rows}{'' if loops == '1' else 'x' + loops})")
    return " / ".join(nodes)


async def run(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The reads' figures and their plans, printed as they come and returned."""
    rt = Runtime(Settings(database_url=url, data_dir=data_dir))  # type: ignore[call-arg]
    reads: dict[str, Any] = {}
    figures: dict[str, Any] = {"database": "sqlite" if rt.db.is_sqlite else "postgresql", "reads": reads}
    await rt.start(apply_migrations=True)
    s = rt.services
    try:
        for slug in PROJECTS[1:]:
            await s.projects.ensure(slug)
        for i in range(AGENTS):
            await s.agents.register(SYSTEM, project="default", name=f"agent-{i}", role=AgentRole.WORKER)
        _, secret = await s.tokens.create(SYSTEM, role=TokenRole.WORKER, project="default", agent="agent-0")
        caller = await s.tokens.authenticate(secret, throttle=False)
        for slug in PROJECTS:  # a first entry makes the project's search index; its triggers index the rest
            await s.knowledge.add(SYSTEM, project=slug, kind=KnowledgeKind.NOTE, title="first", body="lease")
        started = time.perf_counter()
        await rt.db.run_sync(lambda c: fill(c, args.issues, args.messages, args.knowledge), write=True)
        if not rt.db.is_sqlite:
            await vacuum(url)
        figures["fill_s"] = round(time.perf_counter() - started, 1)
        print(
            f"{figures['database']}: {args.issues:,} issues, {args.messages:,} "
            f"messages, {args.knowledge:,} knowledge entries over {len(PROJECTS)} projects "
            f"(filled in {figures['fill_s']:.0f} s); {args.calls} calls each"
        )
        ran = None if rt.db.is_sqlite else Statements(rt.db.engine.sync_engine)

        async def read(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
            await timed(name, args.calls, fn, reads, ran)

        some_issue = (await s.issues.list(caller, limit=1)).items[0].id
        await read("list_issues (open)", lambda: s.issues.list(caller, status=IssueStatus.OPEN))
        await read("list_issues (ready)", lambda: s.issues.list(caller, ready=True))
        await read("get_issue", lambda: s.issues.get(caller, some_issue))
        await read("fetch_inbox", lambda: s.messages.fetch_inbox(caller))
        await read("fetch_inbox (unread)", lambda: s.messages.fetch_inbox(caller, unread_only=True))
        await read("search_knowledge", lambda: s.knowledge.search(caller, "lease merge"))
        await read("search_knowledge (rare word)", lambda: s.knowledge.search(caller, RARE))
        await read(  # every entry is a note: the windows of the kind's entries, as many as without it
            "search_knowledge (a kind)",
            lambda: s.knowledge.search(caller, "lease merge", kind=KnowledgeKind.NOTE),
        )
        await read(  # half the entries carry the tag: the windows of those entries
            "search_knowledge (a tag)", lambda: s.knowledge.search(caller, "lease merge", tags=["ops"])
        )
        await read("search_knowledge (no match)", lambda: s.knowledge.search(caller, ABSENT))
        await read("mail threads (newest 50)", lambda: s.threads.threads(caller))
        some_thread = (await s.threads.threads(caller, limit=1))[0].thread_id
        await read("mail thread", lambda: s.threads.thread(caller, some_thread))
        await read("search_mail (subjects)", lambda: s.threads.search(caller, "lease merge"))
        await read("search_mail (bodies)", lambda: s.threads.search(SYSTEM, "lease merge"))
        await read("search_mail (rare word)", lambda: s.threads.search(SYSTEM, RARE))
        await read("search_mail (no match)", lambda: s.threads.search(SYSTEM, ABSENT))
        await read("search_mail (other projects' word)", lambda: s.threads.search(SYSTEM, ELSEWHERE))
        if rt.db.is_sqlite:
            ids = await rt.db.run_sync(
                lambda c: (
                    c.execute(sa.select(agents.c.id).where(agents.c.name == "agent-0")).scalar_one(),
                    c.execute(sa.select(projects.c.id).where(projects.c.slug == "default")).scalar_one(),
                )
            )
            figures["plans"] = await rt.db.run_sync(lambda c: plans(c, *ids))
        else:
            assert ran is not None
            ran.stop()
            figures["plans"] = await postgres_plans(url, ran.by_read)
    finally:
        await rt.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="an EMPTY database (default: a temporary SQLite file)")
    parser.add_argument("--issues", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--knowledge", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/scale.db"
        figures = asyncio.run(run(url, Path(tmp), args))
    facts.write(args.json, "scale", args, figures)


if __name__ == "__main__":
    main()
