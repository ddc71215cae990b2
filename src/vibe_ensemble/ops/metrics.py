"""Prometheus metrics: HTTP requests, MCP tool calls, database transactions and pools, live feeds.

Each is listed in docs/operations.md#metrics. Every label value comes from a closed set, so no
request can add a series: methods we know (anything else is `other`), route templates (`unmatched`
when no route took the request), status classes (`2xx` … `5xx`), tool names of our profiles
(`unknown` otherwise), outcomes (`ok` or an error code of domain/errors.py), transaction kinds and
service names.

Several worker processes (`serve --workers N`) share one view through prometheus_client's
multiprocess mode: it is on when `PROMETHEUS_MULTIPROC_DIR` is set before prometheus_client is
imported (cli/workers.py sets it), and then every process writes its values to files there and a
scrape of any worker adds them up. Counts that come from the database (issues, agents, leases,
mail, backup age) are the same in every process: they are not kept here but rendered at scrape
time by the process scraped (`render(extra=…)`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)
# Decided by prometheus_client when it was imported: True when PROMETHEUS_MULTIPROC_DIR was set.
MULTIPROCESS = values.ValueClass is not values.MutexValue

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

HTTP_REQUESTS = Counter(
    "vibe_http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=REGISTRY
)
HTTP_LATENCY = Histogram(
    "vibe_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
MCP_CALLS = Counter(
    "vibe_mcp_tool_calls_total",
    "MCP tool calls by tool and outcome (ok, or the code of the error the agent got)",
    ["tool", "outcome"],
    registry=REGISTRY,
)
MCP_LATENCY = Histogram(
    "vibe_mcp_tool_seconds", "MCP tool call latency", ["tool"], registry=REGISTRY, buckets=LATENCY_BUCKETS
)
DB_TRANSACTIONS = Histogram(
    "vibe_db_transaction_seconds",
    "Database transactions of the services, from asking for a connection to commit or rollback",
    ["kind", "service"],
    registry=REGISTRY,
    buckets=DB_BUCKETS,
)
DB_IN_PROGRESS = Gauge(
    "vibe_db_transactions_in_progress",
    "Database transactions of the services open now",
    ["kind"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "vibe_db_pool_size",
    "Connections the pool may hold (PostgreSQL: pool size + overflow; SQLite: the one writer)",
    ["pool"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_IN_USE = Gauge(
    "vibe_db_pool_in_use",
    "Pool connections checked out now",
    ["pool"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
FEED_SUBSCRIBERS = Gauge(
    "vibe_feed_subscribers",
    "Open live-feed connections",
    ["transport"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
FEED_DISCONNECTS = Counter(
    "vibe_feed_disconnects_total",
    "Live-feed clients cut off by the server",
    ["transport", "reason"],
    registry=REGISTRY,
)
DUTY_LEADER = Gauge(
    "vibe_duty_leader",
    "1 while this process (with several workers: one of them) runs the background duties",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
EVENTS_LISTENING = Gauge(
    "vibe_events_listening",
    "1 while this process hears of every commit at once (SQLite: always; PostgreSQL: while it LISTENs); "
    "0 while it asks for them every second instead (feeds and mail waits up to a second late)",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
MAIL_WAITERS = Gauge(
    "vibe_mail_waiters", "Agents waiting in wait_for_messages", registry=REGISTRY, multiprocess_mode="livesum"
)
CALLS_WORKING = Gauge(
    "vibe_calls_working",
    "Requests (MCP and REST) being worked on now; at most VIBE_MAX_CALLS_AT_ONCE a process",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CALLS_QUEUED = Gauge(
    "vibe_calls_queued",
    "Requests (MCP and REST) waiting their turn to be worked on",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# Per-process values read rather than counted (mail waiters, pool use): refreshed by `sample()`,
# at each scrape and, with several workers, every few seconds in each of them (runtime.py).
_SAMPLERS: dict[str, Callable[[], None]] = {}


def add_sampler(name: str, sampler: Callable[[], None]) -> None:
    _SAMPLERS[name] = sampler


def sample() -> None:
    for sampler in list(_SAMPLERS.values()):
        with suppress(Exception):  # a sampler of a stopped runtime must not fail the scrape
            sampler()


class _Families:
    """A collector of metric families built for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


_multiprocess_registry: CollectorRegistry | None = None


def render(extra: Iterable[Metric] = ()) -> bytes:
    """The exposition text: this process's metrics (every worker's, in multiprocess mode), then `extra`."""
    global _multiprocess_registry
    sample()
    if MULTIPROCESS:
        if _multiprocess_registry is None:
            _multiprocess_registry = CollectorRegistry()
            MultiProcessCollector(_multiprocess_registry)  # type: ignore[no-untyped-call]
        body = generate_latest(_multiprocess_registry)
    else:
        body = generate_latest(REGISTRY)
    return body + generate_latest(_Families(extra))


def gauge(
    name: str, documentation: str, value: float | None = None, **by: dict[str, int]
) -> GaugeMetricFamily:
    """A gauge family for `render(extra=…)`: one value, or one sample per label value (`by={label: {…}}`)."""
    if not by:
        return GaugeMetricFamily(name, documentation, value=value)
    ((label, samples),) = by.items()
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, n in sorted(samples.items()):
        family.add_metric([key], n)
    return family


def process_exited(pid: int) -> None:
    """Forget a process's live gauges (multiprocess mode): a worker's once it has exited, the
    `--workers` supervisor's own before it forks the workers (it serves nothing)."""
    if MULTIPROCESS:
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


class TransactionTimer:
    """Times one service's transactions of one kind; `begin()`/`end()` around the transaction.

    The labelled children are bound once here, so a transaction costs two clock reads and three
    in-memory updates (no label lookup, no formatting).
    """

    __slots__ = ("_latency", "_open")

    def __init__(self, kind: str, service: str) -> None:
        self._latency = DB_TRANSACTIONS.labels(kind, service)
        self._open = DB_IN_PROGRESS.labels(kind)

    def begin(self) -> float:
        self._open.inc()
        return time.perf_counter()

    def end(self, started: float) -> None:
        self._open.dec()
        self._latency.observe(time.perf_counter() - started)


@functools.lru_cache(maxsize=4096)
def child(metric: MetricWrapperBase, *values: str) -> Any:
    """`metric.labels(*values)`, kept: prometheus_client checks and joins the values again at every
    `labels` call (five Python calls), and a tool call reads four children. Every label the request
    paths use has a closed set of values (methods, route templates, status classes, our tools'
    names, outcomes), so the children kept are few."""
    return metric.labels(*values)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (never by raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            template = route_template(scope)
            child(HTTP_REQUESTS, method, template, status_class(status)).inc()
            child(HTTP_LATENCY, method, template).observe(time.perf_counter() - start)


def route_template(scope: Scope) -> str:
    """The template of the route that took the request (`/api/v1/issues/{id}`), else `unmatched`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"
