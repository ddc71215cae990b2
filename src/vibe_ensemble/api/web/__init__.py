"""The dashboard for people: server-rendered pages, static script and styles, session login."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from vibe_ensemble.api.web import session
from vibe_ensemble.api.web.views import HERE, router
from vibe_ensemble.ops.config import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard at `/` and its files at `/static`, with this process's session key."""
    app.state.session_key = session.session_key(settings)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


__all__ = ["install"]
