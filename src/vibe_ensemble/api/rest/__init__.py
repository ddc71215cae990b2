"""The REST API under /api/v1: one router per concept, the same concepts as the MCP tools."""

from __future__ import annotations

from fastapi import APIRouter

from vibe_ensemble.api.rest import audit, issues, knowledge, leases, mail, projects, team, tokens

# Routes are matched in this order, each tried in turn (a few microseconds each): an agent's loop
# (mail, heartbeats, issues, leases) first, the rarely called last.
ROUTERS: tuple[APIRouter, ...] = tuple(
    m.router for m in (mail, team, issues, leases, knowledge, projects, tokens, audit)
)

__all__ = ["ROUTERS"]
