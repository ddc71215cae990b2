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


_ADD = Prepared(
    comments.insert()
    .values({c: sa.bindparam(c) for c in ("issue_id", "author", "body", "created_at")})
    .returning(comments.c.id)
)


async def add_comment(conn: Connection, issue_id: int, author: str, body: str, now: datetime) -> int:
    row = {"issue_id": issue_id, "author": author, "body": body, "created_at": now}
    return int((await conn.execute(_ADD, row)).scalar_one())
