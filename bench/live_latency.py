"""Delivery latency of the live feed: from an event's commit to each of many subscribers.

    python bench/live_latency.py                              # own server on SQLite, 100 SSE subscribers
    python bench/live_latency.py --transport ws               # the same over WebSocket
    python bench/live_latency.py --database-url postgresql+asyncpg://…/empty_db --replicas 3
                                                              # written to! subscribers spread over 3
                                                              # replicas, the writer on the first

`--subscribers` clients follow `/api/v1/events/stream` (or `/api/v1/events/ws`) for
`issue.commented` events, while one writer comments on an issue `--events` times, one
comment every `--interval` seconds. With `--projects N` the comments go to N projects in
turn and each subscriber follows one project's events (the deployment's shape: 10,000
subscribers over 100 projects). Each comment is one transaction with one event.
The latency of a delivery is the time a subscriber has parsed the event minus the
event's own timestamp, which the server takes at the start of the transaction: so it
includes the (short) write transaction, and is an upper bound of commit-to-subscriber.
Client and server run on this machine and share its clock. Figures are printed (and with `--json`
written, with the machine's facts), never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import facts  # bench/facts.py
import httpx2
from servers import own_servers  # bench/servers.py (the script's own folder)
from websockets.asyncio.client import connect

EVENT_TYPE = "issue.commented"
BENCH_ISSUE = {"title": "bench", "agent": "bench-writer"}
CONNECTING = 50  # WebSocket handshakes in flight at once


class Subscriber:
    def __init__(self, url: str, token: str, after: int, wanted: int, project: str) -> None:
        self.url = url
        self.token = token
        self.after = after
        self.wanted = wanted
        self.query = f"after={after}&types={EVENT_TYPE}&project={project}"
        self.latencies_ms: list[float] = []
        self.ids: set[int] = set()
        self.duplicates = 0
        self.ready = asyncio.Event()
        self.done = asyncio.Event()

    def got(self, event: dict[str, object]) -> None:
        received = time.time()
        event_id = int(str(event["id"]))
        if event_id in self.ids:
            self.duplicates += 1
            return
        self.ids.add(event_id)
        sent = datetime.fromisoformat(str(event["time"])).timestamp()
        self.latencies_ms.append((received - sent) * 1000)
        if len(self.latencies_ms) == self.wanted:
            self.done.set()

    async def follow_sse(self) -> None:
        """A plain HTTP/1.0 client: the lightest way to hold many streams in one process."""
        host, port = self.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        writer.write(
            f"GET /api/v1/events/stream?{self.query} HTTP/1.0\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise SystemExit(f"the stream was refused: {status!r}")
        while await reader.readline() not in (b"\r\n", b"\n", b""):
            pass
        self.ready.set()
        try:
            while not self.done.is_set():
                line = await reader.readline()
                if not line:
                    raise SystemExit("a stream ended early")
                if line.startswith(b"data: "):
                    self.got(json.loads(line[6:]))
        finally:
            writer.close()

    async def follow_ws(self, gate: asyncio.Semaphore) -> None:
        base = self.url.replace("http://", "ws://")
        url = f"{base}/api/v1/events/ws?{self.query}"
        headers = {"Authorization": f"Bearer {self.token}"}
        async with gate:  # a few handshakes at a time: thousands at once time out
            ws = await connect(url, additional_headers=headers, open_timeout=60)
        async with ws:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "ready":
                    self.ready.set()
                elif message["type"] == "event":
                    self.got(message["event"])
                    if self.done.is_set():
                        return


async def bench(
    urls: list[str],
    token: str,
    args: argparse.Namespace,
    figures: dict[str, Any],
    pids: list[int] | None = None,
) -> list[float]:
    """Every delivery's latency; what else it measures goes into `figures` as it prints it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(base_url=urls[0] + "/api/v1", headers=headers, timeout=30) as api:
        projects = ["default"] + [f"bench-{k}" for k in range(1, args.projects)]
        issues = {}
        for slug in projects:
            if slug != "default":
                (await api.post("/projects", json={"slug": slug, "name": slug})).raise_for_status()
            await api.post(f"/projects/{slug}/agents", json={"name": "bench-writer"})
            made = await api.post(
                f"/projects/{slug}/issues", json={"title": "bench", "agent": "bench-writer"}
            )
            issues[slug] = made.json()["id"]
        start = (await api.get("/events", params={"after": 0, "limit": 1})).json()
        after = await newest_id(api, start["last_id"])
        rss_before = [rss_mb(pid) for pid in pids or []]
        # the events go to the projects in turn; each subscriber follows one project
        per_project = [len(range(k, args.events, len(projects))) for k in range(len(projects))]
        subscribers = [
            Subscriber(
                urls[i % len(urls)], token, after, per_project[i % len(projects)], projects[i % len(projects)]
            )
            for i in range(args.subscribers)
        ]
        gate = asyncio.Semaphore(CONNECTING)
        tasks = [
            asyncio.create_task(s.follow_ws(gate) if args.transport == "ws" else s.follow_sse())
            for s in subscribers
        ]
        async with asyncio.timeout(30 + 0.05 * len(subscribers)):
            ready = asyncio.ensure_future(asyncio.gather(*(s.ready.wait() for s in subscribers)))
            ended = asyncio.ensure_future(asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED))
            await asyncio.wait([ready, ended], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            for task in tasks:  # a subscriber that failed to connect says why
                if task.done():
                    raise SystemExit(f"a subscriber failed: {task.exception()!r}")
        print(
            f"{len(subscribers)} {args.transport} subscribers over {len(projects)} project(s) "
            f"on {len(urls)} server(s); "
            f"writing {args.events} events, one every {args.interval * 1000:.0f} ms"
        )
        for pid, before in zip(pids or [], rss_before, strict=True):
            subscribed = rss_mb(pid)
            per = (subscribed - before) * 1024 / max(1, args.subscribers // len(urls))
            figures["servers"][pid] = {
                "rss_mb_before": round(before, 1),
                "rss_mb_subscribed": round(subscribed, 1),
                "kb_per_subscriber": round(per, 1),
            }
            print(
                f"server {pid}: RSS {before:.0f} MB before the subscribers, {subscribed:.0f} MB with all"
                f" subscribed ({per:.1f} KB a subscriber)"
            )
        for i in range(args.events):
            slug = projects[i % len(projects)]
            response = await api.post(
                f"/projects/{slug}/issues/{issues[slug]}/comments",
                json={"body": f"#{i}", "agent": "bench-writer"},
            )
            response.raise_for_status()
            await asyncio.sleep(args.interval)
        async with asyncio.timeout(60):
            await asyncio.gather(*(s.done.wait() for s in subscribers))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    duplicates = sum(s.duplicates for s in subscribers)
    missing = sum(s.wanted - len(s.ids) for s in subscribers)
    print(f"lost {missing}, duplicated {duplicates}")
    figures.update(lost=missing, duplicated=duplicates)
    return [ms for s in subscribers for ms in s.latencies_ms]


async def newest_id(api: httpx2.AsyncClient, after: int) -> int:
    while True:
        page = (await api.get("/events", params={"after": after, "limit": 1000})).json()
        if not page["items"]:
            return after
        after = page["last_id"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one or more)")
    parser.add_argument("--token", help="an admin token for --url")
    parser.add_argument(
        "--database-url", help="an EMPTY database for the servers started here (default: SQLite)"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="servers to start on one database (PostgreSQL)"
    )
    parser.add_argument("--subscribers", type=int, default=100, help="concurrent subscribers (default 100)")
    parser.add_argument("--events", type=int, default=200, help="events to write (default 200)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between writes (default 0.02)")
    parser.add_argument("--transport", choices=["sse", "ws"], default="sse")
    parser.add_argument(
        "--projects", type=int, default=1, help="spread events and subscribers over this many projects"
    )
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    args = parser.parse_args()
    if args.url and not args.token:
        parser.error("--url needs --token")
    if args.replicas > 1 and not (args.database_url or "").startswith("postgres"):
        parser.error("several replicas need --database-url postgresql+asyncpg://… (SQLite has one owner)")

    figures: dict[str, Any] = {"servers": {}}
    if args.url:
        latencies = asyncio.run(bench([args.url.rstrip("/")], args.token, args, figures))
    else:
        with own_servers(args.database_url, args.replicas) as servers:
            urls, token = servers.urls, servers.token
            latencies = asyncio.run(bench(urls, token, args, figures, servers.pids))
            for pid in servers.pids:
                after = rss_mb(pid)
                figures["servers"].setdefault(pid, {})["rss_mb_after"] = round(after, 1)
                print(f"server {pid}: RSS {after:.0f} MB after the run")

    ordered = sorted(latencies)
    print(f"\n{'deliveries':>10}{'median ms':>11}{'p99 ms':>9}{'mean ms':>9}{'max ms':>9}")
    print(
        f"{len(ordered):>10}{statistics.median(ordered):>11.2f}{percentile(ordered, 99):>9.2f}"
        f"{statistics.fmean(ordered):>9.2f}{ordered[-1]:>9.2f}"
    )
    figures["deliveries"] = {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(percentile(ordered, 99), 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "max_ms": round(ordered[-1], 2),
    }
    facts.write(args.json, "live_latency", args, figures)


if __name__ == "__main__":
    main()
