"""A swarm of agents against our server and, side by side, against a bare server on the same SDK.

    python bench/swarm.py                                   # 10 and 50 agents, SQLite, 10 s each
    python bench/swarm.py --agents 10 --seconds 5 --database-url postgresql+asyncpg://…/empty_db
    python bench/swarm.py --door rest                       # the same loop over /api/v1
    python bench/swarm.py --mix                             # plus heartbeat, claims, leases, search
    python bench/swarm.py --agents 10 --seconds 4 --repeat 4   # each server's window 4 times, in turn
    python bench/swarm.py --url http://host:8080 --token vibe_…   # a running server (admin token)

Each agent has its own agent-bound token and its own client, and loops for a fixed time:
`send_message` to the next agent, then `fetch_inbox` of its own mail (with `--mix`, every fourth
round also heartbeats, claims and closes an issue, reserves and releases a path and searches
knowledge). The bare server (bench/bare_server.py) runs the same loop against tools that return
constants, so everything it costs is the SDK, the transport and the client; the figures for ours
are printed as ratios to it. Each server's loop runs 1 s before its measured window opens, and
the window closes with the loop still running, so neither end is a burst or a tail. /healthz is
probed under our server's loop after its window (as long again), so the probes' CPU is not counted
as the calls'. The servers run one after another; with `--repeat N` each one's window runs N times,
in turn, the order reversed every other time (ours, bare, shaped; shaped, bare, ours; ...), and its
figures are those of all its windows together, so a drift of the machine's speed through the run
falls alike on each (the probes and `--profile` follow our server's first window only). Server
CPU per call comes from /proc/PID/stat; the machine's other load (from /proc/stat, minus both
servers and this process) is printed beside them, so a noisy run is visible, with the kernel's
share of our server's CPU and, for a PostgreSQL on this machine, the CPU it spent per call (part of
the other load). Against a running server (`--url`, with an admin
token that creates one agent-bound token per agent in its `default` project) the server's CPU and
its liveness port are not measured. Figures are printed and written as JSON (`--json`), never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import facts  # bench/facts.py
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from servers import free_port, own_servers, wait_ready  # bench/servers.py
from sqlalchemy.engine import make_url

HERE = Path(__file__).parent
WARM_UP_S = 1.0  # the loop runs this long before the measured window opens
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOCAL_HOSTS = (None, "127.0.0.1", "localhost", "::1")


def cpu_split(pid: int | None) -> tuple[float, float]:
    """User and system CPU seconds of the server process and of its live children (the workers of
    `--workers N`); nothing for no process."""
    user = system = 0.0
    if pid is None:
        return user, system
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself, or its parent is the server
            user += int(fields[11]) / CLK_TCK  # utime
            system += int(fields[12]) / CLK_TCK  # stime
    return user, system


def postgres_seconds() -> float:
    """CPU seconds of the PostgreSQL server on this machine: every `postgres` process's own, and its
    reaped children's (a backend that ended, an autovacuum worker, reaped by the postmaster). All of
    the server's work counts, as it does for a call: its backends, the WAL writer, the checkpointer,
    autovacuum."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / CLK_TCK


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Run:
    server: str
    agents: int
    seconds: float
    url: str
    calls: int = 0
    errors: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    server_cpu_s: float = 0.0
    server_system_s: float = 0.0  # of server_cpu_s, in the kernel (system time)
    database_cpu_s: float | None = None  # a local PostgreSQL server's (in other load too); None: not measured
    health_ms: list[float] = field(default_factory=list)  # /healthz latency under the loop, after the window
    health_port_ms: list[float] = field(default_factory=list)  # the same on the liveness port
    floor_ms: list[float] = field(default_factory=list)  # a constant HTTP server's (health_probe.py)
    other_load_cores: float = 0.0
    first_error: str = ""
    answers: dict[str, Any] = field(default_factory=dict)  # each tool's last result (ours, MCP; one agent's)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def pct(self, p: float, tool: str | None = None) -> float:
        return _pct(self.latencies[tool] if tool else [v for vs in self.latencies.values() for v in vs], p)

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.server_cpu_s / max(1, self.calls)

    @property
    def database_ms_per_call(self) -> float | None:
        return None if self.database_cpu_s is None else 1000 * self.database_cpu_s / max(1, self.calls)

    @property
    def system_share(self) -> float:
        return self.server_system_s / self.server_cpu_s if self.server_cpu_s else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures for JSON, where one not measured (NaN) is null."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in self._figures().items()}

    def _figures(self) -> dict[str, Any]:
        database = self.database_ms_per_call
        return {
            "server": self.server,
            "agents": self.agents,
            "seconds": round(self.seconds, 2),
            "calls": self.calls,
            "errors": self.errors,
            "first_error": self.first_error,
            "calls_per_s": round(self.rate, 1),
            "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2),
            "per_tool_p99_ms": {t: round(self.pct(99, t), 2) for t in sorted(self.latencies)},
            "server_cpu_ms_per_call": round(self.cpu_ms_per_call, 3),
            "server_system_share": round(self.system_share, 3),
            "database_cpu_ms_per_call": None if database is None else round(database, 3),
            "other_load_cores": round(self.other_load_cores, 2),
            "healthz_p99_ms": round(_pct(self.health_ms, 99), 2),
            "health_port_p99_ms": round(_pct(self.health_port_ms, 99), 2),
            "floor_p99_ms": round(_pct(self.floor_ms, 99), 2),
        }


def merged(runs: list[Run]) -> Run:
    """One server's windows (`--repeat`) as one run: their calls, errors, latencies, CPU and time
    together, and the other load over their time."""
    first = runs[0]
    run = Run(first.server, first.agents, sum(r.seconds for r in runs), first.url)
    for r in runs:
        run.calls += r.calls
        run.errors += r.errors
        run.first_error = run.first_error or r.first_error
        for tool, values in r.latencies.items():
            run.latencies[tool] += values
        run.server_cpu_s += r.server_cpu_s
        run.server_system_s += r.server_system_s
        if r.database_cpu_s is not None:
            run.database_cpu_s = (run.database_cpu_s or 0.0) + r.database_cpu_s
        run.health_ms += r.health_ms
        run.health_port_ms += r.health_port_ms
        run.floor_ms += r.floor_ms
        run.other_load_cores += r.other_load_cores * r.seconds / run.seconds
        run.answers.update(r.answers)
    return run


class McpDoor:
    """One agent's calls over MCP (the official SDK client); with `record`, each tool's last result
    is kept there (the shaped server answers with them)."""

    def __init__(self, url: str, token: str, mode: str, record: dict[str, Any] | None = None) -> None:
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.client = Client(streamable_http_client(url + "/mcp", http_client=self.http), mode=mode)
        self.record = record

    async def __aenter__(self) -> McpDoor:
        await self.http.__aenter__()
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(None, None, None)
        await self.http.__aexit__(None, None, None)

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        result = await self.client.call_tool(tool, args)
        if result.is_error:
            raise RuntimeError(f"{tool}: {result.content[0].text if result.content else result}")
        if self.record is not None:
            self.record[tool] = result  # dumped once, for the shaped server, not at every call
        return result.structured_content


class RestDoor:
    """The same operations over /api/v1 (one HTTP client per agent)."""

    ROUTES = {
        "register_agent": ("POST", "/agents"),
        "send_message": ("POST", "/messages"),
        "fetch_inbox": ("GET", "/agents/{agent}/inbox"),
        "heartbeat": ("POST", "/agents/{agent}/heartbeat"),
    }

    def __init__(self, url: str, token: str, agent: str) -> None:
        self.base = url + "/api/v1/projects/default"
        self.agent = agent
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)

    async def __aenter__(self) -> RestDoor:
        await self.http.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.__aexit__(None, None, None)

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        method, path = self.ROUTES[tool]
        path = self.base + path.format(agent=self.agent)
        if method == "GET":
            resp = await self.http.get(path, params=args)
        else:
            resp = await self.http.post(path, json=args)
        if resp.status_code >= 400:
            raise RuntimeError(f"{tool}: {resp.status_code} {resp.text[:200]}")
        return resp.json()


async def agent_loop(
    run: Run, door: Any, name: str, peer: str, window: dict[str, float], mix: bool, bare: bool
) -> None:
    """Loops until `window["stop"]`; a call is counted (and its latency kept) when it ends inside the
    measured window, `window["start"]` to `window["end"]` (both set once the warm-up is over)."""

    async def timed(tool: str, args: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            result = await door.call(tool, args)
        except Exception as exc:  # a failed call is counted and shown, not fatal
            run.errors += 1
            run.first_error = run.first_error or str(exc)[:300]
            return None
        ended = time.perf_counter()
        if window["start"] <= ended <= window["end"]:
            run.latencies[tool].append((ended - t0) * 1000)
            run.calls += 1
        return result

    rounds = 0
    while time.perf_counter() < window["stop"]:
        await timed("send_message", {"to": [peer], "subject": f"round {rounds}", "body": "x" * 200})
        await timed("fetch_inbox", {"limit": 20, "unread_only": True})
        rounds += 1
        if mix and not bare and rounds % 4 == 0:
            await timed("heartbeat", {"status": "working"})
            created = await timed("create_issue", {"title": f"{name} task {rounds}"})
            if created:
                issue = created.get("id")
                await timed("claim_issue", {"id": issue})
                await timed("comment_issue", {"id": issue, "body": "on it"})
                await timed("close_issue", {"id": issue, "resolution": "done"})
            await timed("reserve_paths", {"paths": [f"src/{name}/**"], "ttl_s": 60})
            await timed("release_paths", {})
            await timed("search_knowledge", {"query": "swarm"})


async def swarm(
    server: str,
    url: str,
    pid: int | None,
    tokens: list[str],
    offset: int,
    seconds: float,
    args: argparse.Namespace,
    *,
    first: bool = True,
) -> Run:
    """One swarm's window; `pid`: the server's process, whose CPU is measured (None: not on hand).
    `first`: our server's first window of this size, the one profiled and followed by the probes of
    /healthz (a later window, with `--repeat`, is not)."""
    n = len(tokens)
    names = [f"agent-{offset + i}" for i in range(n)]
    bare = server != "ours"  # the bare server, or the shaped one: the plain loop, over MCP

    run = Run(server, n, seconds, url=url)

    def door(i: int) -> Any:
        if args.door == "rest" and not bare:
            return RestDoor(url, tokens[i], names[i])
        return McpDoor(url, tokens[i], args.mode, record=None if bare or i else run.answers)

    ready = 0
    all_ready, go = asyncio.Event(), asyncio.Event()
    # Until the warm-up is over no call is counted (start and end at infinity); the agents loop
    # until `stop`, past the measured window while /healthz is probed (ours only).
    window = {"start": math.inf, "end": math.inf, "stop": math.inf}

    async def agent(i: int) -> None:
        nonlocal ready
        async with door(i) as d:  # a client is entered and left in its own task (anyio scopes)
            await d.call("register_agent", {"name": names[i], "role": "worker"})  # outside the window
            ready += 1
            if ready == n:
                all_ready.set()
            await go.wait()
            await agent_loop(run, d, names[i], names[(i + 1) % n], window, args.mix, bare)

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(agent(i))
        await all_ready.wait()
        go.set()
        # The window opens on a loop already running (every agent has calls under way) and closes on
        # one still running: the calls in flight at its start, counted as they end inside it, stand
        # for those in flight at its end, whose CPU it holds but whose ends it does not.
        await asyncio.sleep(WARM_UP_S)
        profiler = (
            profile(pid, seconds, args.profile) if args.profile and pid and not bare and first else None
        )
        (user0, system0), busy0, own0 = cpu_split(pid), machine_busy_seconds(), time.process_time()
        database0 = postgres_seconds() if args.local_postgres and not bare else 0.0
        started = time.perf_counter()
        window["start"], window["end"] = started, started + seconds
        await asyncio.sleep(seconds)
        user, system = cpu_split(pid)
        busy, own = machine_busy_seconds(), time.process_time()
        database = postgres_seconds() if args.local_postgres and not bare else 0.0
        run.seconds = time.perf_counter() - started
        if not bare and first:
            await probe_health(run, seconds, args)  # the same loop, after the window: not in its CPU
        window["stop"] = time.perf_counter()  # each agent ends after the call it is in
    if profiler:
        profiler.wait(timeout=60)
    run.server_cpu_s = (user - user0) + (system - system0) if pid else float("nan")
    run.server_system_s = system - system0
    if args.local_postgres and not bare:
        run.database_cpu_s = database - database0
    ours = run.server_cpu_s if pid else 0.0  # a server not started here is part of the other load
    other = (busy - busy0) - ours - (own - own0)
    run.other_load_cores = max(0.0, other / run.seconds)
    return run


async def probe_health(run: Run, seconds: float, args: argparse.Namespace) -> None:
    """/healthz under the loop, every 50 ms for `seconds`, from a process of its own (this one's loop
    is busy): the main port's, the liveness port's (ops/health.py) and the floor's (a constant answer
    from a process of its own: what the machine alone costs a probe under this load). It runs after
    the measured window, so the probes' own CPU is not counted against the calls."""
    liveness = [args.health_url + "/healthz"] if args.health_url else []  # unknown for --url
    probes = [run.url + "/healthz", args.floor_url + "/", *liveness]
    script = str(Path(__file__).with_name("health_probe.py"))
    prober = await asyncio.create_subprocess_exec(
        sys.executable, script, str(seconds), *probes, stdout=asyncio.subprocess.PIPE
    )
    found = json.loads((await prober.communicate())[0])
    run.health_ms = found[probes[0]]
    run.floor_ms = found[probes[1]]
    run.health_port_ms = found[liveness[0]] if liveness else []


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample our server with py-spy (pip install py-spy) for the measured window."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
    argv += ["--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def agent_tokens(url: str, admin: str, n: int, offset: int) -> list[str]:
    """One agent-bound worker token per agent (created over REST by the admin)."""
    out = []
    with httpx2.Client(headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:
        for i in range(n):
            body = {"role": "worker", "project": "default", "agent": f"agent-{offset + i}"}
            resp = http.post(url + "/api/v1/tokens", json=body)
            resp.raise_for_status()
            out.append(resp.json()["token"])
    return out


def start_bare(answers: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """The bare server; with a file of our answers, the shaped one (bench/bare_server.py)."""
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bare-{port}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "bare_server.py"), str(port), *([str(answers)] if answers else [])],
            stdout=fh,
            stderr=fh,
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log, path="/mcp", ok=(400, 406), method="POST")
    return proc, url


def ratio(ours: float, bare: float) -> str:
    return f"{ours / bare:.2f}x" if bare and not math.isnan(ours) else "-"


def report(pairs: list[tuple[Run, Run]], shaped: list[Run | None]) -> None:
    print(
        f"\n{'agents':>6} {'server':<8}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms/call':>12}"
        f"{'errors':>8}{'other load':>11}   per-tool p99 ms"
    )
    for (ours, bare), floor in zip(pairs, shaped, strict=True):
        for r in (ours, bare, *([floor] if floor else [])):
            tools = " ".join(f"{t}={v:.0f}" for t, v in r.summary()["per_tool_p99_ms"].items())
            cpu = "-" if math.isnan(r.cpu_ms_per_call) else f"{r.cpu_ms_per_call:.2f}"  # "-": not measured
            print(
                f"{r.agents:>6} {r.server:<8}{r.rate:>9.1f}{r.pct(50):>9.1f}{r.pct(99):>9.1f}"
                f"{cpu:>12}{r.errors:>8}{r.other_load_cores:>10.2f}c   {tools}"
            )
        print(
            f"{'':>6} {'ratio':<8}{ratio(ours.rate, bare.rate):>9}{'':>9}"
            f"{ratio(ours.pct(99), bare.pct(99)):>9}"
            f"{ratio(ours.cpu_ms_per_call, bare.cpu_ms_per_call):>12}"
        )
        if floor:
            print(
                f"{'':>6} shaped: the bare server answering with our last answers, CPU "
                f"{ratio(floor.cpu_ms_per_call, bare.cpu_ms_per_call)} the bare server's and calls/s "
                f"{ratio(floor.rate, bare.rate)}: the SDK's own work on our payloads; ours to shaped, CPU "
                f"{ratio(ours.cpu_ms_per_call, floor.cpu_ms_per_call)}"
            )
        liveness = (
            f"{_pct(ours.health_port_ms, 99):.1f} ms on the liveness port (VIBE_HEALTH_PORT)"
            if ours.health_port_ms
            else "the liveness port not measured"
        )
        print(
            f"{'':>6} /healthz under this load: p99 {_pct(ours.health_ms, 99):.1f} ms on the main port, "
            f"{liveness}; floor {_pct(ours.floor_ms, 99):.1f} ms "
            "(a constant answer from a process of its own)"
        )
        database = (
            ""
            if ours.database_ms_per_call is None
            else f"; PostgreSQL {ours.database_ms_per_call:.2f} ms CPU per call (in other load)"
        )
        if not math.isnan(ours.server_cpu_s):
            # The issue's target reads "at most 2x the bare server's CPU, i.e. our own work under ~1.5 ms a
            # call" (written when the bare server took 1.4 ms): both readings, side by side.
            own = ours.cpu_ms_per_call - bare.cpu_ms_per_call
            own_work = "" if math.isnan(own) else f"; our own work (ours - bare) {own:.2f} ms a call"
            print(f"{'':>6} our server's CPU: {ours.system_share:.0%} in the kernel{own_work}{database}")
        if ours.first_error:
            print(f"       first error: {ours.first_error}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", default="10,50", help="comma-separated swarm sizes (default 10,50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per window (default 10)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="each server's window this many times, in turn, the order reversed every other time (default 1)",
    )
    parser.add_argument("--database-url", help="an EMPTY database (default: a temporary SQLite file)")
    parser.add_argument("--door", choices=["mcp", "rest"], default="mcp", help="our door for the loop")
    parser.add_argument("--mode", choices=["auto", "legacy"], default="auto", help="MCP protocol era")
    parser.add_argument("--mix", action="store_true", help="add heartbeat, claims, leases and search")
    parser.add_argument("--workers", type=int, default=0, help="serve --workers N (PostgreSQL only)")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of our server (last swarm size)")
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    parser.add_argument(
        "--url", help="a running server instead of one started here (its CPU is not measured)"
    )
    parser.add_argument("--token", help="an admin token for --url")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.url and not args.token:
        parser.error("--url needs --token (an admin token)")
    if args.url and (args.database_url or args.workers or args.profile):
        parser.error("--database-url, --workers and --profile are for a server started here, not --url")
    sizes = [int(x) for x in args.agents.split(",")]
    # A PostgreSQL on this machine: its CPU is measured too (`postgres_seconds`).
    database = make_url(args.database_url) if args.database_url else None
    local = (
        database is not None
        and database.get_backend_name() == "postgresql"
        and (database.host in LOCAL_HOSTS or str(database.host).startswith("/"))  # or its socket's directory
    )
    args.local_postgres = local

    pairs: list[tuple[Run, Run]] = []
    shaped: list[Run | None] = []  # the shaped server's run beside each pair (over MCP only)
    bare_proc, bare_url = start_bare()
    extra = ["--workers", str(args.workers)] if args.workers else []
    health_port, floor_port = free_port(), free_port()
    args.health_url = f"http://127.0.0.1:{health_port}"
    args.floor_url = f"http://127.0.0.1:{floor_port}"
    floor = subprocess.Popen([sys.executable, str(HERE / "health_probe.py"), "--floor", str(floor_port)])

    def swarms(url: str, pid: int | None, admin: str) -> None:
        offset = 0
        for n in sizes:
            tokens = agent_tokens(url, admin, n, offset)
            windows: dict[str, list[Run]] = {"ours": [], "bare": [], "shaped": []}
            with contextlib.ExitStack() as stack:
                shaped_at: tuple[int, str] | None = None  # the shaped server, once ours has answered
                for r in range(args.repeat):
                    # in turn, the order reversed every other time: a drift of the machine's speed
                    # through the run falls alike on each server
                    order = ("ours", "bare", "shaped") if r % 2 == 0 else ("shaped", "bare", "ours")
                    for server in order:
                        if server == "ours":
                            run = swarm("ours", url, pid, tokens, offset, args.seconds, args, first=r == 0)
                        elif server == "bare":
                            run = swarm("bare", bare_url, bare_proc.pid, tokens, offset, args.seconds, args)
                        else:
                            if r == 0 and args.door == "mcp":
                                shaped_at = stack.enter_context(started_shaped(windows["ours"][0]))
                            if shaped_at is None:
                                continue  # over REST, or no call of ours succeeded
                            run = swarm(
                                "shaped", shaped_at[1], shaped_at[0], tokens, offset, args.seconds, args
                            )
                        windows[server].append(asyncio.run(run))
            pairs.append((merged(windows["ours"]), merged(windows["bare"])))
            shaped.append(merged(windows["shaped"]) if windows["shaped"] else None)
            offset += n

    try:
        wait_ready(args.floor_url, floor, Path(os.devnull), path="/")
        if args.url:
            args.health_url = None  # its liveness port, if any, is not known here
            swarms(args.url.rstrip("/"), None, args.token)
        else:
            with own_servers(
                args.database_url, 1, extra_args=extra, extra_env={"VIBE_HEALTH_PORT": str(health_port)}
            ) as servers:
                swarms(servers.urls[0], servers.pids[0], servers.token)
    finally:
        for proc in (bare_proc, floor):
            proc.terminate()
            proc.wait(timeout=15)

    ours_at = f"server={args.url}" if args.url else f"database={args.database_url or 'sqlite (temp)'}"
    print(f"door={args.door} mode={args.mode} mix={args.mix} {ours_at}")
    report(pairs, shaped)
    figures = {
        "runs": [[o.summary(), b.summary()] for o, b in pairs],
        "shaped": [s.summary() if s else None for s in shaped],
    }
    facts.write(args.json, "swarm", args, figures)


@contextlib.contextmanager
def started_shaped(ours: Run) -> Iterator[tuple[int, str] | None]:
    """The bare server answering with our last answers (bench/bare_server.py), its process id and
    URL: the same loop against it is what the SDK and the transport cost for our payloads alone,
    none of our own work. None when no call of ours succeeded."""
    if not {"send_message", "fetch_inbox"} <= ours.answers.keys():
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.json"
        dumped = {
            tool: r.model_dump(mode="json", by_alias=True, exclude_none=True)
            for tool, r in ours.answers.items()
        }
        answers.write_text(json.dumps(dumped))
        proc, url = start_bare(answers)
        try:
            yield proc.pid, url
        finally:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()
