"""`GET /metrics`: this process's metrics (every worker's, with several) and the database's counts.

The counts (issues and agents by status, live leases, unread mail, backup age) are read at most
every few seconds (services/stats.py, services/backups.py). When the database cannot be read,
/metrics still answers: with the backup age last known, without the counts.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client.metrics_core import Metric

from vibe_ensemble.ops import metrics
from vibe_ensemble.runtime import Runtime


def install(app: FastAPI, runtime: Runtime) -> None:
    backup_age = float("inf")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
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
