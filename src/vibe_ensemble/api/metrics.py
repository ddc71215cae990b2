"""`GET /metrics`: this process's metrics (every worker's, with several) and the database's counts.

The counts (issues and agents by status, live leases, unread mail, backup age) are read at most
every few seconds (services/stats.py, services/backups.py). When the database cannot be read,
/metrics still answers: with the backup age last known, without the counts.

Who may read it (docs/operations.md#metrics):
- `VIBE_METRICS_TOKEN` set: only `Authorization: Bearer <that token>` (compared in constant time),
  whatever the Host (api/hosts.py exempts /metrics then: Prometheus scrapes pods by IP address);
  anything else gets 401 with `WWW-Authenticate: Bearer`.
- unset: anyone on a loopback-only server (VIBE_HOST on loopback, no VIBE_ALLOWED_HOSTS), through
  the Host check like every route; on any other server, 403 naming VIBE_METRICS_TOKEN.
"""

from __future__ import annotations

import contextlib
import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.metrics_core import Metric

from vibe_ensemble.api import auth
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

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
    presented = auth.bearer_token(request.headers)
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


def install(app: FastAPI, runtime: Runtime) -> None:
    backup_age = float("inf")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        refused = refusal(runtime.settings, request)
        if refused is not None:
            return refused
        nonlocal backup_age
        extra: list[Metric] = []
        with contextlib.suppress(Exception):
            backup_age = await runtime.services.backups.age_s()
        extra.append(
            metrics.gauge(
                "vibe_backup_age_seconds",
                "Seconds since the last successful backup (+Inf: none recorded); from the audit log, "
                "so every replica reports the same",
                backup_age,
            )
        )
        with contextlib.suppress(Exception):
            stats = await runtime.services.stats.current()
            extra += [
                metrics.gauge("vibe_issues", "Issues by status, every project", status=stats.issues),
                metrics.gauge("vibe_agents", "Agents not retired, by status", status=stats.agents),
                metrics.gauge(
                    "vibe_leases_active", "Leases held now (not released, not expired)", stats.live_leases
                ),
                metrics.gauge("vibe_messages_unread", "Mail deliveries not yet read", stats.unread_mail),
            ]
        return Response(metrics.render(extra), media_type="text/plain; version=0.0.4")
