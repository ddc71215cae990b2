"""Full-text search of mail (subject and body), ranked, on both backends — as knowledge does it.

SQLite: one external-content FTS5 table per project, `messages_fts_<project id>`, over that
project's rows of `messages` (kept by three triggers, each guarded by `project_id`), so bm25's
statistics are the project's own and FTS5 ranks inside SQLite (`ORDER BY rank LIMIT n`). A
project's table is made with the project, in the same transaction (`ensure`, from
`projects.insert`), and by migration 0006 for projects that existed before, so every project has
one and a search does not look for it first.

PostgreSQL: a generated `search` tsvector (the subject weighted A, the body B) with a GIN index;
`ts_rank` reads nothing but the row.

Ranked are the project's newest CANDIDATES matches, not all of them: mail grows without end, and
scoring every message that holds a common word took seconds at 100,000 messages; the newest
matches are also the likelier ones to be looked for. Snippets are made for the hits only.

Who may read bodies decides what is searched: with `bodies` the subject and the body, without
it the subject alone (an FTS5 column filter; a tsquery restricted to weight A), so a search can
never reveal a body word by word. Queries are built from word tokens (`knowledge.terms`: letters
and digits only), quoted by this module, so no user text reaches a query parser. Matches in the
body's snippet are marked with « and » (rendered by the dashboard's `marked`, escaped).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import Importance
from vibe_ensemble.domain.threads import MailHit
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.knowledge import ELLIPSIS, MARK_END, MARK_START, fts5_query
from vibe_ensemble.store.tables import messages

_m = messages
WEIGHTS = (5.0, 1.0)  # subject, body: FTS5's column order
RANKING = "bm25({}, {})".format(*WEIGHTS)
TOKENIZER = "porter unicode61"
PREFIX = "messages_fts_"
SNIPPET_TOKENS = 16
CANDIDATES = 1000  # the newest matches ranked: a word every message holds costs 1,000 scores, not all
_search: sa.ColumnClause[Any] = sa.literal_column("messages.search")  # PostgreSQL only
_headline_options = (
    f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=24, MinWords=8, ShortWord=2, "
    f"MaxFragments=2, FragmentDelimiter={ELLIPSIS}"
)


def table_name(project_id: int) -> str:
    return f"{PREFIX}{int(project_id)}"


def ddl(project_id: int) -> list[str]:
    """The project's FTS5 table and the triggers that keep it equal to its rows of `messages`."""
    t, p = table_name(project_id), int(project_id)
    insert_new = f"INSERT INTO {t}(rowid, subject, body) SELECT new.id, new.subject, new.body"
    delete_old = f"INSERT INTO {t}({t}, rowid, subject, body) SELECT 'delete', old.id, old.subject, old.body"
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {t} USING fts5(subject, body, "
        f"content='messages', content_rowid='id', tokenize='{TOKENIZER}')",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ai AFTER INSERT ON messages WHEN new.project_id = {p} "
        f"BEGIN {insert_new}; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ad AFTER DELETE ON messages WHEN old.project_id = {p} "
        f"BEGIN {delete_old}; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_au AFTER UPDATE ON messages "
        f"WHEN old.project_id = {p} OR new.project_id = {p} "
        f"BEGIN {delete_old} WHERE old.project_id = {p}; {insert_new} WHERE new.project_id = {p}; END",
    ]


def backfill(project_id: int) -> str:
    """Index the project's existing mail (the migration, for projects made before it)."""
    t, p = table_name(project_id), int(project_id)
    return (
        f"INSERT INTO {t}(rowid, subject, body) SELECT id, subject, body FROM messages WHERE project_id = {p}"  # noqa: S608  # nosec B608
    )


async def ensure(conn: Connection, project_id: int) -> None:
    """Create the project's mail index on SQLite (nothing to do on PostgreSQL)."""
    if conn.dialect.name != "sqlite":
        return
    for statement in ddl(project_id):
        await conn.execute(sa.text(statement))


async def search(
    conn: Connection, project_id: int, words: list[str], *, bodies: bool, limit: int
) -> list[MailHit]:
    """The project's `limit` messages that best match any of `words` (in the subject, or with
    `bodies` the subject and the body) among its newest CANDIDATES matches, best first, newest first
    among equals; with `bodies` a snippet of the body with the matches marked, else none."""
    if not words:
        return []
    if conn.dialect.name == "postgresql":
        rows = list(await conn.execute(_postgres(project_id, words, bodies).limit(limit)))
        snippets = {r.id: r.snippet or "" for r in rows}
    else:
        match = fts5_query(words) if bodies else f"subject : ({fts5_query(words)})"
        rows = list(await conn.execute(_sqlite(project_id, match).limit(limit)))
        snippets = await _sqlite_snippets(conn, project_id, match, [r.id for r in rows]) if bodies else {}
    return [
        MailHit(
            r.id,
            r.thread_id,
            r.sender,
            r.subject,
            Importance(r.importance),
            r.created_at,
            snippets.get(r.id, "") if bodies else "",
        )
        for r in rows
    ]


def _columns() -> list[sa.ColumnElement[Any]]:
    return [_m.c.id, _m.c.thread_id, _m.c.sender, _m.c.subject, _m.c.importance, _m.c.created_at]


def _fts(project_id: int) -> tuple[sa.TableClause, sa.ColumnClause[Any]]:
    t = table_name(project_id)
    return sa.table(t, sa.column("rowid")), sa.literal_column(t)


def _sqlite(project_id: int, match: str) -> sa.Select[Any]:
    """The newest CANDIDATES matches (FTS5 walks its index newest first and stops there), ranked by
    bm25 over the project's statistics (negated: lower is better)."""
    fts, ref = _fts(project_id)
    newest = (
        sa.select(fts.c.rowid.label("id"), sa.func.bm25(ref, *WEIGHTS).label("score"))
        .where(ref.op("MATCH")(match))
        .order_by(fts.c.rowid.desc())
        .limit(CANDIDATES)
        .subquery()
    )
    return (
        sa.select(*_columns())
        .select_from(newest.join(_m, _m.c.id == newest.c.id))
        .order_by(newest.c.score, _m.c.id.desc())
    )


async def _sqlite_snippets(conn: Connection, project_id: int, match: str, ids: list[int]) -> dict[int, str]:
    """FTS5's snippets of the bodies of these hits only (a snippet costs more than a score)."""
    if not ids:
        return {}
    fts, ref = _fts(project_id)
    snippet = sa.func.snippet(ref, 1, MARK_START, MARK_END, ELLIPSIS, SNIPPET_TOKENS)
    query = sa.select(fts.c.rowid, snippet.label("snippet")).where(
        ref.op("MATCH")(match), fts.c.rowid.in_(ids)
    )
    return {r.rowid: r.snippet or "" for r in await conn.execute(query)}


def _postgres(project_id: int, words: list[str], bodies: bool) -> sa.Select[Any]:
    # Each word is letters and digits only, so `to_tsquery` sees a word (":A" limits it to the
    # subject's lexemes), never an operator.
    suffix = "" if bodies else ":A"
    query: sa.ColumnElement[Any] = sa.func.to_tsquery("english", words[0] + suffix)
    for w in words[1:]:
        query = query.op("||")(sa.func.to_tsquery("english", w + suffix))
    newest = (
        sa.select(_m.c.id, sa.func.ts_rank(_search, query).label("score"))
        .where(_m.c.project_id == project_id, _search.op("@@")(query))
        .order_by(_m.c.id.desc())
        .limit(CANDIDATES)
        .subquery()
    )
    snippet = sa.func.ts_headline("english", _m.c.body, query, _headline_options) if bodies else sa.null()
    return (
        sa.select(*_columns(), snippet.label("snippet"))
        .select_from(newest.join(_m, _m.c.id == newest.c.id))
        .order_by(newest.c.score.desc(), _m.c.id.desc())
    )
