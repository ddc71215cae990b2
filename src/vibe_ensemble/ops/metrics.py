"""Prometheus metrics: request counts and latencies per route, and tool calls."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "vibe_http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=REGISTRY
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
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(time.perf_counter() - start)
