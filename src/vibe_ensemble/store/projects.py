"""Projects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.errors import Conflict, NotFound
from vibe_ensemble.domain.models import Project
from vibe_ensemble.store import mail_search
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import projects


def to_project(row: sa.Row[Any]) -> Project:
    return Project(
        id=row.id,
        slug=row.slug,
        name=row.name,
        description=row.description,
        repo=row.repo,
        created_at=row.created_at,
    )


async def by_slug(conn: Connection, slug: str) -> Project:
    row = (await conn.execute(sa.select(projects).where(projects.c.slug == slug))).first()
    if row is None:
        raise NotFound(f"project {slug!r} does not exist", project=slug)
    return to_project(row)


async def find(conn: Connection, slug: str) -> Project | None:
    row = (await conn.execute(sa.select(projects).where(projects.c.slug == slug))).first()
    return None if row is None else to_project(row)


async def insert(
    conn: Connection, *, slug: str, name: str, description: str, repo: str, now: datetime
) -> Project:
    if await find(conn, slug) is not None:
        raise Conflict(f"project {slug!r} already exists", project=slug)
    result = await conn.execute(
        projects.insert()
        .values(slug=slug, name=name, description=description, repo=repo, created_at=now)
        .returning(projects)
    )
    project = to_project(result.one())
    await mail_search.ensure(conn, project.id)  # the project's mail index (SQLite), with the project
    return project


async def all_projects(conn: Connection, slugs: list[str] | None = None) -> list[Project]:
    q = sa.select(projects).order_by(projects.c.slug)
    if slugs is not None:
        q = q.where(projects.c.slug.in_(slugs))
    return [to_project(r) for r in await conn.execute(q)]
