"""Knowledge search on SQLite: one FTS5 index per project, so bm25 reads that project alone.

FTS5's `bm25()` takes its statistics — the number of rows, their average length and how many
rows hold each term — from the whole FTS5 table. With one table for every project, a caller's
scores would move with what other projects hold (adding rows that contain a word to project B
lowers its weight in project A's scores, so A can learn how common a word is in B). So each
project has its own external-content FTS5 table, `knowledge_fts_<project id>`, over the
`knowledge` table's rows of that project, and the ranking is done inside SQLite
(`ORDER BY bm25(…) LIMIT n`, with the column weights below): the cost is FTS5's scoring of the
project's matches, and nothing is fetched into Python but the hits.

The table and its three triggers (insert, update, delete; each guarded by `project_id`) are
created with the project's first entry (`ensure`, called by `knowledge.insert`), and by
migration 0003 for projects that had entries before. A project without entries has no table,
and its searches find nothing. PostgreSQL's `ts_rank` uses nothing but the row, so it needs
none of this.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.models import KnowledgeHit
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import knowledge

WEIGHTS = (10.0, 1.0, 5.0)  # title, body, tags: FTS5's column order
TOKENIZER = "porter unicode61"
PREFIX = "knowledge_fts_"


def table_name(project_id: int) -> str:
    return f"{PREFIX}{int(project_id)}"


def ddl(project_id: int) -> list[str]:
    """The project's FTS5 table and the triggers that keep it equal to its rows of `knowledge`."""
    t, p = table_name(project_id), int(project_id)
    insert_new = f"INSERT INTO {t}(rowid, title, body, tags) SELECT new.id, new.title, new.body, new.tags"
    delete_old = (
        f"INSERT INTO {t}({t}, rowid, title, body, tags) "
        "SELECT 'delete', old.id, old.title, old.body, old.tags"
    )
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {t} USING fts5(title, body, tags, "
        f"content='knowledge', content_rowid='id', tokenize='{TOKENIZER}')",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ai AFTER INSERT ON knowledge WHEN new.project_id = {p} "
        f"BEGIN {insert_new}; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ad AFTER DELETE ON knowledge WHEN old.project_id = {p} "
        f"BEGIN {delete_old}; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_au AFTER UPDATE ON knowledge "
        f"WHEN old.project_id = {p} OR new.project_id = {p} "
        f"BEGIN {delete_old} WHERE old.project_id = {p}; {insert_new} WHERE new.project_id = {p}; END",
    ]


async def ensure(conn: Connection, project_id: int) -> None:
    """Create the project's index (if it does not exist yet) before its rows are written."""
    for statement in ddl(project_id):
        await conn.execute(sa.text(statement))


async def exists(conn: Connection, project_id: int) -> bool:
    found = await conn.execute(
        sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": table_name(project_id)},
    )
    return found.first() is not None


async def search(
    conn: Connection,
    project_id: int,
    match: str,
    where: list[sa.ColumnElement[bool]],
    limit: int,
    marks: tuple[str, str, str],
) -> list[KnowledgeHit]:
    """The project's best `limit` rows matching the FTS5 expression `match` and passing `where`,
    ranked by bm25 (negated: higher is better), with FTS5's snippets (`marks`: start, end, ellipsis)."""
    if not await exists(conn, project_id):
        return []
    return [_hit(r) for r in await conn.execute(statement(project_id, match, where, limit, marks))]


def statement(
    project_id: int, match: str, where: list[sa.ColumnElement[bool]], limit: int, marks: tuple[str, str, str]
) -> sa.Select[Any]:
    """The search as one SELECT over the project's FTS5 table (`search`; `bench/scale.py` shows its plan)."""
    t = table_name(project_id)
    fts = sa.table(t, sa.column("rowid"))
    ref: sa.ColumnClause[Any] = sa.literal_column(t)
    # bm25 (k1 = 1.2, b = 0.75): lower is better. SQLite's own sorter keeps the best `limit` as
    # the matches are scored, and snippets are made for those rows only. FTS5's own
    # `ORDER BY rank` gives the same rows for about a quarter more (bench/RESULTS.md).
    rank = sa.func.bm25(ref, *WEIGHTS)
    return (
        sa.select(
            knowledge.c.id,
            knowledge.c.title,
            knowledge.c.kind,
            knowledge.c.tags,
            (-rank).label("score"),
            sa.func.snippet(ref, -1, *marks, 16).label("snippet"),
        )
        .select_from(fts.join(knowledge, knowledge.c.id == fts.c.rowid))
        .where(ref.op("MATCH")(match), *where)
        .order_by(rank)
        .limit(limit)
    )


def _hit(row: sa.Row[Any]) -> KnowledgeHit:
    return KnowledgeHit(
        id=row.id,
        title=row.title,
        kind=KnowledgeKind(row.kind),
        tags=list(row.tags),
        score=round(float(row.score), 6),
        snippet=row.snippet or "",
    )
