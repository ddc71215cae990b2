"""`GET /metrics`: this process's metrics (every worker's, with several) and the database's counts.

The counts (issues and agents by status, live leases, unread mail, backup age) are read at most
every few seconds (services/stats.py, services/backups.py), and waited for at most `DB_WAIT_S`
(`DatabaseFigures`). When the database cannot be read, or not in time, /metrics still answers: with
the figures last read, and their age.

Who may read it (docs/operations.md#metrics):
- `VIBE_METRICS_TOKEN` set: only `Authorization: Bearer <that token>` (compared in constant time),
  whatever the Host (api/hosts.py exempts /metrics then: Prometheus scrapes pods by IP address);
  anything else gets 401 with `WWW-Authenticate: Bearer`.
- unset: anyone on a loopback-only server (VIBE_HOST on loopback, no VIBE_ALLOWED_HOSTS), through
  the Host check like every route; on any other server, 403 naming VIBE_METRICS_TOKEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import time
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.metrics_core import Metric

from vibe_ensemble.api import auth
from vibe_ensemble.domain.errors import Unauthenticated
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services.stats import ServerStats

DB_WAIT_S = 2.0  # how long a scrape waits for the database's figures before answering with the last

REALM = 'Bearer realm="vibe-ensemble metrics"'
UNSET = (
    "/metrics answers without a token only on a server that listens on loopback and serves loopback "
    "names only: set VIBE_METRICS_TOKEN and give it to Prometheus as its bearer token"
)


def refusal(settings: Settings, request: Request) -> Response | None:
    """Why this request may not read /metrics, as the answer to send; None when it may."""
    if not settings.metrics_token:
        if settings.loopback_only:
            return None
        return JSONResponse(auth.error_body("permission_denied", UNSET), 403)
    try:
        presented = auth.bearer_token(request.headers)
    except Unauthenticated as exc:
        return JSONResponse(auth.error_body(exc.code, exc.message), 401, {"WWW-Authenticate": REALM})
    # headers arrive as latin-1 text: back to their bytes, against the setting's UTF-8 bytes
    if presented is not None and hmac.compare_digest(
        presented.encode("latin-1"), settings.metrics_token.encode()
    ):
        return None
    challenge = REALM if presented is None else REALM + ', error="invalid_token"'
    message = "/metrics needs Authorization: Bearer <VIBE_METRICS_TOKEN>"
    if presented is not None:
        message = "the bearer token is not this server's VIBE_METRICS_TOKEN"
    return JSONResponse(auth.error_body("unauthenticated", message), 401, {"WWW-Authenticate": challenge})


class DatabaseFigures:
    """The figures a scrape reads from the database, waited for at most `wait_s`.

    One task at a time reads them. A scrape that does not see it finish in time (a table locked, a
    database slow or gone) answers with the figures last read, with `vibe_db_figures_age_seconds`
    saying how old they are: Prometheus' scrape timeout (10 s by default) would otherwise fail the
    whole scrape, and with it this process's own figures (calls queued, transactions, pools) when
    they matter most. The read goes on, and the next scrape takes what it found. The wait is
    counted from the read's start, so while one read is stuck every later scrape answers at once.
    """

    def __init__(self, runtime: Runtime, wait_s: float = DB_WAIT_S) -> None:
        self.runtime = runtime
        self.wait_s = wait_s
        self.last_backup: datetime | None = None  # the newest good backup's time, as last read
        self.stats: ServerStats | None = None  # as last read, with when
        self._reading: asyncio.Task[None] | None = None
        self._give_up_at = 0.0  # the loop's time when scrapes stop waiting for the read under way

    async def latest(self) -> list[Metric]:
        loop = asyncio.get_running_loop()
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(), context=contextvars.Context())
            self._give_up_at = loop.time() + self.wait_s
        if loop.time() < self._give_up_at:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self._give_up_at):
                    await asyncio.shield(self._reading)
        return self._gauges()

    async def _read(self) -> None:
        services = self.runtime.services
        with contextlib.suppress(Exception):  # the backup last known stands
            self.last_backup = await services.backups.last_created()
        with contextlib.suppress(Exception):  # the counts last read stand, or none
            self.stats = await services.stats.current()

    def _gauges(self) -> list[Metric]:
        backup_age = float("inf")
        if self.last_backup is not None:  # its age, now, whether or not the log could be read now
            backup_age = max(
                0.0, (self.runtime.services.backups.ctx.clock() - self.last_backup).total_seconds()
            )
        stats = self.stats
        since = float("inf") if stats is None else time.monotonic() - stats.read_at
        return database_gauges(backup_age, stats, since)


def database_gauges(backup_age: float, stats: ServerStats | None, since: float) -> list[Metric]:
    """The figures from the database as /metrics gives them: the backup age, the counts (when ever
    read) and how old they are (`since`: seconds since they were read from the database)."""
    gauges: list[Metric] = [
        metrics.gauge(
            "vibe_backup_age_seconds",
            "Seconds since the last successful backup (+Inf: none recorded); from the audit log, "
            "so every replica reports the same",
            backup_age,
        ),
        metrics.gauge(
            "vibe_db_figures_age_seconds",
            "Seconds since the counts on /metrics (issues, agents, leases, unread mail) were read from "
            f"the database (+Inf: never); a scrape waits at most {DB_WAIT_S:g} s for a read",
            since,
        ),
    ]
    if stats is not None:
        gauges += [
            metrics.gauge("vibe_issues", "Issues by status, every project", status=stats.issues),
            metrics.gauge("vibe_agents", "Agents not retired, by status", status=stats.agents),
            metrics.gauge(
                "vibe_leases_active", "Leases held now (not released, not expired)", stats.live_leases
            ),
            metrics.gauge("vibe_messages_unread", "Mail deliveries not yet read", stats.unread_mail),
        ]
    return gauges


def install(app: FastAPI, runtime: Runtime) -> None:
    figures = DatabaseFigures(runtime)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        refused = refusal(runtime.settings, request)
        if refused is not None:
            return refused
        return Response(metrics.render(await figures.latest()), media_type="text/plain; version=0.0.4")
