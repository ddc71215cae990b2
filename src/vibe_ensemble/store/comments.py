"""Comments on issues."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from vibe_ensemble.domain.models import Comment
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared
from vibe_ensemble.store.tables import comments

_COMMENTS_OF = Prepared(
    sa.select(comments).where(comments.c.issue_id == sa.bindparam("id")).order_by(comments.c.id)
)


async def comments_of(conn: Connection, issue_id: int) -> list[Comment]:
    rows = await conn.execute(_COMMENTS_OF, {"id": issue_id})
    return [
        Comment(id=r.id, issue_id=r.issue_id, author=r.author, body=r.body, created_at=r.created_at)
        for r in rows
    ]


async def add_comment(conn: Connection, issue_id: int, author: str, body: str, now: datetime) -> int:
    result = await conn.execute(
        comments.insert()
        .values(issue_id=issue_id, author=author, body=body, created_at=now)
        .returning(comments.c.id)
    )
    return int(result.scalar_one())
