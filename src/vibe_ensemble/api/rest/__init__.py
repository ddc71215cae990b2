"""The REST API under /api/v1: one router per concept, the same concepts as the MCP tools."""

from __future__ import annotations

from fastapi import APIRouter

from vibe_ensemble.api.rest import audit, issues, knowledge, leases, mail, projects, team, tokens

ROUTERS: tuple[APIRouter, ...] = tuple(
    m.router for m in (projects, team, issues, mail, leases, knowledge, tokens, audit)
)

__all__ = ["ROUTERS"]
