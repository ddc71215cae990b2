"""/metrics scraped from real servers: MCP tool calls, database transactions and pools, the database's
counts, and one view over several workers (prometheus multiprocess mode)."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import asyncpg
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.postgres_pool import dsn
from tests.support import ServerProcess, call, call_error, mcp_client, start_server


def scrape(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics (parsed by prometheus_client's own parser), by name and labels."""
    r = httpx2.get(f"{server.url}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _team(server: ServerProcess) -> None:
    """Two agents, three issues (one claimed), a lease, one message to one agent."""
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        await call(client, "register_agent", name="ada", role="coordinator")
        await call(client, "register_agent", name="bob", role="worker")
        first = await call(client, "create_issue", title="one", agent="ada")
        await call(client, "create_issue", title="two", agent="ada")
        await call(client, "create_issue", title="three", agent="ada")
        await call(client, "claim_issue", id=first["id"], agent="bob")
        await call(client, "reserve_paths", paths=["src/**"], agent="bob")
        await call(client, "send_message", subject="hi", body="secret body", to=["bob"], agent="ada")
        # Failures, each counted by the code the agent got:
        assert "[not_found]" in await call_error(client, "claim_issue", id=999_999, agent="bob")
        assert "[invalid_input]" in await call_error(client, "claim_issue", issue=1, agent="bob")
        # A made-up tool name is counted as `unknown`, never as a series of its own.
        result = await client.call_tool("no_such_tool_xyzzy", {})
        assert result.is_error


async def test_tool_calls_transactions_pools_and_counts_on_sqlite(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        await _team(server)
        m = scrape(server)
        text = httpx2.get(f"{server.url}/metrics", timeout=30).text
    finally:
        server.stop()

    calls = "vibe_mcp_tool_calls_total"
    assert value(m, calls, tool="register_agent", outcome="ok") == 2
    assert value(m, calls, tool="create_issue", outcome="ok") == 3
    assert value(m, calls, tool="claim_issue", outcome="ok") == 1
    assert value(m, calls, tool="claim_issue", outcome="not_found") == 1
    assert value(m, calls, tool="claim_issue", outcome="invalid_input") == 1
    assert value(m, calls, tool="unknown", outcome="invalid_input") == 1
    assert "xyzzy" not in text
    assert value(m, "vibe_mcp_tool_seconds_count", tool="claim_issue") == 3
    assert value(m, "vibe_mcp_tool_seconds_bucket", tool="claim_issue", le="+Inf") == 3

    # Transactions timed at the service boundary, by kind and service; none open between requests.
    assert value(m, "vibe_db_transaction_seconds_count", kind="write", service="issue") >= 4
    assert value(m, "vibe_db_transaction_seconds_count", kind="read", service="token") >= 1
    assert value(m, "vibe_db_transactions_in_progress", kind="write") == 0
    assert value(m, "vibe_db_transactions_in_progress", kind="read") == 0
    assert value(m, "vibe_db_pool_size", pool="sqlite_writer") == 1
    assert ("vibe_db_pool_in_use", frozenset({("pool", "sqlite_writer")})) in m

    # The database's counts, whole server.
    assert value(m, "vibe_issues", status="open") == 2
    assert value(m, "vibe_issues", status="in_progress") == 1
    assert value(m, "vibe_agents", status="working") + value(m, "vibe_agents", status="idle") == 2
    assert value(m, "vibe_leases_active") == 1
    assert value(m, "vibe_messages_unread") == 1
    assert value(m, "vibe_backup_age_seconds") == float("inf")
    # Labels stay within closed sets: no agent, project or issue names, no message text.
    assert not re.search(r"ada|bob|secret body", text)


async def _create_issue(server: ServerProcess, title: str) -> None:
    async with mcp_client(server.mcp_url, server.admin_token) as client:  # a new connection each time
        await call(client, "create_issue", title=title, agent="w1")


def _pids_with_counters(metrics_dir: Path) -> set[str]:
    return {p.name.split("_")[-1].removesuffix(".db") for p in metrics_dir.glob("counter_*.db")}


@pytest.mark.postgres
async def test_a_scrape_answers_in_time_while_the_database_is_stuck(
    tmp_path: Path, postgres_url: str
) -> None:
    """A table locked by another session holds the counts' read. The scrape answers within its bound
    (DB_WAIT_S, 2 s) anyway, with this process's own figures and no counts, saying their age is
    unknown; the read goes on, and once the lock is gone the next scrape has the counts."""
    server = start_server(tmp_path, database_url=postgres_url)
    locker = await asyncpg.connect(dsn(postgres_url))
    try:
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "register_agent", name="ada", role="coordinator")
            await call(client, "create_issue", title="counted", agent="ada")
        locked = locker.transaction()
        await locked.start()
        await locker.execute("LOCK TABLE issues IN ACCESS EXCLUSIVE MODE")
        with anyio.fail_after(8):  # the bound is 2 s; a stuck scrape would wait for the lock for good
            stuck = await anyio.to_thread.run_sync(scrape, server)
        assert value(stuck, "vibe_db_figures_age_seconds") == float("inf")
        assert ("vibe_issues", frozenset({("status", "open")})) not in stuck
        assert value(stuck, "vibe_http_requests_total", method="POST", route="/mcp", status="2xx") >= 1
        await locked.rollback()
        with anyio.fail_after(8):
            while ("vibe_issues", frozenset({("status", "open")})) not in (fresh := scrape(server)):
                await anyio.sleep(0.05)  # the read that waited for the lock finishes just after it
        assert value(fresh, "vibe_issues", status="open") == 1
        assert value(fresh, "vibe_db_figures_age_seconds") < 8
    finally:
        await locker.close()
        server.stop()


@pytest.mark.postgres
async def test_several_workers_report_one_total(tmp_path: Path, postgres_url: str) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # A file of an earlier run is removed at start (were it read, the scrape would fail on it).
    (metrics_dir / "counter_999999.db").write_bytes(b"not a metrics file")
    server = start_server(
        tmp_path,
        database_url=postgres_url,
        extra_args=["--workers", "2"],
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    try:
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "register_agent", name="w1", role="worker")
        # The kernel hands each new connection to whichever worker accepts first; nothing promises
        # a spread, so issues are created, four connections at a time, until both workers served
        # some (bounded: 30 rounds of four are far more than a fair spread needs).
        created = 0
        while len(_pids_with_counters(metrics_dir) - {"999999"}) < 2 and created < 120:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(_create_issue, server, f"issue {created}")
                    created += 1
        assert len(_pids_with_counters(metrics_dir) - {"999999"}) >= 2, _pids_with_counters(metrics_dir)
        for _ in range(6):  # each scrape lands on either worker; every one reports the replica's total
            m = scrape(server)
            assert value(m, "vibe_mcp_tool_calls_total", tool="create_issue", outcome="ok") == created
            assert value(m, "vibe_http_requests_total", method="POST", route="/mcp", status="2xx") >= created
            assert value(m, "vibe_db_pool_size", pool="postgresql") == 2 * 20  # two workers' pools
            assert value(m, "vibe_issues", status="open") == created
        # `vibe_events_listening` is the smallest over the live workers: 1 once both LISTEN. The
        # supervisor serves nothing and has no say (its 0 had held the gauge at 0 for good, and the
        # alert VibeEnsembleEventsNotListening firing).
        supervisor = server.proc.pid
        assert not list(metrics_dir.glob(f"gauge_live*_{supervisor}.db")), sorted(metrics_dir.iterdir())
        listening = await _scraped_soon(server, "vibe_events_listening", 1.0)
        assert listening == 1.0, sorted(p.name for p in metrics_dir.iterdir())
        assert value(scrape(server), "vibe_duty_leader") == 1.0  # one of the workers leads the duties
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log()
    assert not (metrics_dir / "counter_999999.db").exists()


async def _scraped_soon(server: ServerProcess, name: str, wanted: float, deadline: float = 30.0) -> float:
    """The value of `name` once a scrape shows `wanted`, or the last one seen after `deadline` seconds."""
    seen = value(scrape(server), name)
    with anyio.move_on_after(deadline):
        while seen != wanted:
            await anyio.sleep(0.1)
            seen = value(scrape(server), name)
    return seen
