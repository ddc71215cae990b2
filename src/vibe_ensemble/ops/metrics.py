"""Prometheus metrics: request counts and latencies per route, and tool calls."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)

# Every label value comes from a closed set, so no request can add a series: methods we know
# (anything else is `other`), route templates (`unmatched` when no route took the request) and
# status classes (`2xx` … `5xx`).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "vibe_http_requests_total",
    "HTTP requests answered",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "vibe_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)

FEED_SUBSCRIBERS = Gauge(
    "vibe_feed_subscribers", "Open live-feed connections", ["transport"], registry=REGISTRY
)
FEED_DISCONNECTS = Counter(
    "vibe_feed_disconnects_total",
    "Live-feed clients cut off by the server",
    ["transport", "reason"],
    registry=REGISTRY,
)
DUTY_LEADER = Gauge("vibe_duty_leader", "1 while this process runs the background duties", registry=REGISTRY)
BACKUP_AGE = Gauge(
    "vibe_backup_age_seconds",
    "Seconds since the last successful backup (+Inf: none recorded); from the audit log, so every "
    "replica reports the same",
    registry=REGISTRY,
)
BACKUP_AGE.set(float("inf"))
MAIL_WAITERS = Gauge("vibe_mail_waiters", "Agents waiting in wait_for_messages", registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)


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
            HTTP_REQUESTS.labels(method, template, status_class(status)).inc()
            HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - start)


def route_template(scope: Scope) -> str:
    """The template of the route that took the request (`/api/v1/issues/{id}`), else `unmatched`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"
