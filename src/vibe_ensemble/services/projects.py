"""Projects: the code bases the ensemble works on."""

from __future__ import annotations

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Project
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import projects as store


class ProjectService(Service):
    async def create(
        self, caller: Caller, *, slug: str, name: str | None = None, description: str = "", repo: str = ""
    ) -> Project:
        caller.require(Op.PROJECT_ADMIN)
        slug = rules.slug("slug", slug)
        name = rules.line("name", name or slug, max_len=rules.MAX_LINE)
        description = rules.text("description", description, max_len=rules.MAX_BODY, required=False)
        repo = rules.line("repo", repo, max_len=rules.MAX_NOTE, required=False)
        async with self.write() as tx:
            project = await store.insert(
                tx.conn, slug=slug, name=name, description=description, repo=repo, now=tx.now
            )
            tx.emit(EventType.PROJECT_CREATED, caller.display, project.id, slug=slug, name=name)
            tx.audit(caller, "project.created", project=slug)
        return project

    async def ensure(self, slug: str, name: str | None = None) -> Project:
        """Create the project unless it exists (used for the default project at start-up)."""
        async with self.write() as tx:
            existing = await store.find(tx.conn, slug)
            if existing is not None:
                return existing
            project = await store.insert(
                tx.conn, slug=slug, name=name or slug, description="", repo="", now=tx.now
            )
            tx.emit(EventType.PROJECT_CREATED, "system", project.id, slug=slug, name=project.name)
        return project

    async def list(self, caller: Caller) -> list[Project]:
        caller.require(Op.PROJECT_READ)
        async with self.snapshot() as conn:
            return await store.all_projects(conn, None if caller.project is None else [caller.project])

    async def get(self, caller: Caller, slug: str | None) -> Project:
        caller.require(Op.PROJECT_READ)
        async with self.snapshot() as conn:
            return await self.project(conn, caller, slug)
