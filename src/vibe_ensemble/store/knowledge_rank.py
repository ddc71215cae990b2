"""Knowledge search on SQLite: one FTS5 index per project, so bm25 reads that project alone.

FTS5's `bm25()` takes its statistics — the number of rows, their average length and how many
rows hold each term — from the whole FTS5 table. With one table for every project, a caller's
scores would move with what other projects hold (adding rows that contain a word to project B
lowers its weight in project A's scores, so A can learn how common a word is in B). So each
project has its own external-content FTS5 table, `knowledge_fts_<project id>`, over the
`knowledge` table's rows of that project, and the ranking is done inside SQLite
(`ORDER BY bm25(…) LIMIT n`, with the column weights below): the cost is FTS5's scoring of the
project's matches (past `ALL_RANKED` of them, of each word's newest: `search`), and nothing is
fetched into Python but the hits.

The table and its three triggers (insert, update, delete; each guarded by `project_id`) are
created with the project's first entry (`ensure`, called by `knowledge.insert`), and by
migration 0003 for projects that had entries before. A project without entries has no table,
and its searches find nothing. PostgreSQL's `ts_rank` uses nothing but the row, so it needs
none of this.

The table indexes an entry's kind and tag keys beside its text (migration 0016), each as one token
that no query word can be (`kind_token`, `tag_token`: the value's UTF-8 bytes in hex, after a
private-use character, which a query's words never hold), in columns of their own that weigh
nothing in bm25. So a search narrowed to a kind or tags is an FTS5 query like any other
(`"…k6e6f7465x" AND ("lease" OR "merge")`), with the same windows, and scores an entry as the
unnarrowed one does; a tag key is matched whole and exactly (the tags' own column holds their
words, for the query's words to find).
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.models import KnowledgeHit
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, first_record, records
from vibe_ensemble.store.tables import knowledge

# title, body, tags, kind, tag keys: FTS5's column order (a kind and tag keys narrow, never score)
WEIGHTS = (10.0, 1.0, 5.0, 0.0, 0.0)
HEADINGS = "{title tags}"  # the columns that weigh most
# Starts the token of a kind or tag key: a private-use character, never in a query's words
# (`knowledge.words`: runs of letters and digits), and a token character to FTS5's tokenizer
FILTER_MARK = "\ue000"
TOKENIZER = "porter unicode61"
PREFIX = "knowledge_fts_"
# The matches of each word ranked at most, the newest: what a word that thousands of entries hold
# costs a search (`search`). Read at each call (a test sets it lower).
WINDOW = 1000
# A search of at most this many matches ranks them all: the windows would cost about what they save
ALL_RANKED = 4000


def table_name(project_id: int) -> str:
    return f"{PREFIX}{int(project_id)}"


def ddl(project_id: int, *, narrowing: bool = True) -> list[str]:
    """The project's FTS5 table and the triggers that keep it equal to its rows of `knowledge`, with
    the kind and tag keys (`narrowing`), or as revisions 0003 to 0015 made them (title, body and tags:
    migrations 0003 and 0016)."""
    t, p, indexed = table_name(project_id), int(project_id), columns(narrowing)
    new, old = values("new", narrowing=narrowing), values("old", narrowing=narrowing)
    insert_new = f"INSERT INTO {t}(rowid, {indexed}) SELECT new.id, {new}"
    delete_old = f"INSERT INTO {t}({t}, rowid, {indexed}) SELECT 'delete', old.id, {old}"
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {t} USING fts5({indexed}, "
        f"content='knowledge', content_rowid='id', tokenize='{TOKENIZER}')",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ai AFTER INSERT ON knowledge WHEN new.project_id = {p} "
        f"BEGIN {insert_new}; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ad AFTER DELETE ON knowledge WHEN old.project_id = {p} "
        f"BEGIN {delete_old}; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_au AFTER UPDATE ON knowledge "
        f"WHEN old.project_id = {p} OR new.project_id = {p} "
        f"BEGIN {delete_old} WHERE old.project_id = {p}; {insert_new} WHERE new.project_id = {p}; END",
    ]


def columns(narrowing: bool = True) -> str:
    """The FTS5 table's columns: the text's, and with `narrowing` the kind's and the tag keys'."""
    return "title, body, tags, kind, tag_keys" if narrowing else "title, body, tags"


def values(row: str, *, narrowing: bool = True) -> str:
    """The values the FTS5 table indexes of a `knowledge` row (`new`, `old`, or the table's name),
    for its `columns`: its text, and with `narrowing` its kind as a token (`kind_token`) and its tag
    keys as tokens (`tag_token`; an older release's entry without keys: its tags as written, as the
    tag filter reads them)."""
    if not narrowing:
        return f"{row}.title, {row}.body, {row}.tags"
    mark = f"char({ord(FILTER_MARK)})"
    keys = (
        f"(SELECT group_concat({mark} || 't' || lower(hex(value)) || 'x', ' ') "  # noqa: S608  # nosec B608
        f"FROM json_each(coalesce({row}.tag_keys, {row}.tags)))"
    )
    kind = f"{mark} || 'k' || lower(hex({row}.kind)) || 'x'"
    return f"{row}.title, {row}.body, {row}.tags, {kind}, {keys}"


def kind_token(kind: str) -> str:
    """The FTS5 phrase of a kind, as `values` indexes it: one token, which no query word can be."""
    return f'"{FILTER_MARK}k{kind.encode().hex()}x"'


def tag_token(key: str) -> str:
    """The FTS5 phrase of a tag key (`rules.label_key`), as `values` indexes it: one token, so only
    that key matches it, whole, and no query word can be it. (It ends in `x`, which the porter
    stemmer leaves as it is.)"""
    return f'"{FILTER_MARK}t{key.encode().hex()}x"'


async def ensure(conn: Connection, project_id: int) -> None:
    """Create the project's index (if it does not exist yet) before its rows are written."""
    for statement in ddl(project_id):
        await conn.execute(sa.text(statement))


_SQLITE_MASTER = sa.table("sqlite_master", sa.column("type"), sa.column("name"))
_EXISTS = Prepared(
    sa.select(sa.literal_column("1")).where(
        _SQLITE_MASTER.c.type == "table", _SQLITE_MASTER.c.name == sa.bindparam("name", type_=sa.String)
    )
)


async def exists(conn: Connection, project_id: int) -> bool:
    found = await conn.execute(_EXISTS, {"name": table_name(project_id)})
    return first_record(found) is not None


async def search(
    conn: Connection,
    project_id: int,
    phrases: list[str],
    kind: str | None,
    tag_keys: list[str],
    limit: int,
    marks: tuple[str, str, str],
) -> list[KnowledgeHit]:
    """The project's best `limit` rows matching any of the FTS5 `phrases` (one quoted word each), of
    the `kind` and carrying every one of the `tag_keys` (`rules.label_key`) when given, ranked by
    bm25 (negated: higher is better), with FTS5's snippets (`marks`: start, end, ellipsis).

    Ranked are each phrase's newest `WINDOW` matches, and its newest `WINDOW` matches in a title or
    tags (the columns that weigh most): all of them for a word fewer entries hold (`in_windows`,
    `windows`). So a search scores at most twice `WINDOW` entries a word however many hold it. A
    search of at most `ALL_RANKED` matches ranks them all, without windows: listing each word's
    newest matches, and testing each match against the list, cost about what scoring the few
    thousand left out would. The kind and the tag keys are tokens of the FTS5 query (`filters`), so a
    narrowed search has the same windows, of the entries that pass: tested on each match's row of
    `knowledge`, every match had cost its row's read.

    bm25 (k1 = 1.2, b = 0.75; lower is better) keeps its statistics from the whole project's table,
    so an entry ranked scores what it would among all the matches, and SQLite's sorter keeps the
    best `limit` as they come. The candidates are ranked on the FTS5 table alone (`ranking`), and
    only the best are read from `knowledge`, with their snippets (`hits`): joined for every match,
    the project's rows were read for all of them. The two statements are built once per project
    and number of windows (`_searching`).
    """
    if not await exists(conn, project_id):
        return []
    narrowing = filters(kind, tag_keys)
    match = matching(phrases, narrowing)
    many = await _more_matches(conn, project_id, match, ALL_RANKED)
    windowed = windows(phrases, narrowing) if many else []
    ranked, found_hits = _searching(project_id, len(windowed), marks)
    expressions = {f"window_{i}": expression for i, expression in enumerate(windowed)}
    parameters = {"match": match, "window": WINDOW, "limit": limit, **expressions}
    best = [(r.id, -r.rank) for r in records(await conn.execute(ranked, parameters))]
    if not best:
        return []
    rows = records(await conn.execute(found_hits, {"match": match, "ids": [i for i, _ in best]}))
    found = {r.id: r for r in rows}
    return [_hit(found[i], score) for i, score in best if i in found]


def filters(kind: str | None = None, tag_keys: list[str] | None = None) -> list[str]:
    """The FTS5 phrases an entry of the `kind` carrying the `tag_keys` matches."""
    return ([kind_token(kind)] if kind else []) + [tag_token(key) for key in tag_keys or []]


def matching(phrases: list[str], narrowing: list[str] | None = None) -> str:
    """The FTS5 expression of a search: any of the `phrases`, of an entry that matches every phrase of
    the `narrowing` (`filters`)."""
    words = " OR ".join(phrases)
    return " AND ".join([*narrowing, f"({words})"]) if narrowing else words


def windows(phrases: list[str], narrowing: list[str] | None = None) -> list[str]:
    """The FTS5 expressions whose newest matches are a search's candidates: each phrase, and each
    phrase in a title or tags, of an entry that matches the `narrowing` (`filters`). An old entry
    with a query word in its title is still ranked when a thousand newer entries hold the word in
    their bodies."""
    found = [expression for p in phrases for expression in (p, f"{HEADINGS} : {p}")]
    return [" AND ".join([*(narrowing or []), expression]) for expression in found]


@functools.lru_cache(maxsize=256)  # the projects searched lately
def _matches(project_id: int) -> Prepared:
    """The project's matches of `match`, counted up to `n`: a walk of their ids, nothing scored."""
    fts, ref = _fts(project_id)
    found = sa.select(fts.c.rowid).where(ref.op("MATCH")(sa.bindparam("match", type_=sa.String)))
    return Prepared(sa.select(sa.func.count()).select_from(found.limit(sa.bindparam("n")).subquery()))


async def _more_matches(conn: Connection, project_id: int, match: str, n: int) -> bool:
    """More than `n` of the project's entries match."""
    found = await conn.execute(_matches(project_id), {"match": match, "n": n + 1})
    return int(found.scalar_one()) > n


@functools.lru_cache(maxsize=256)  # the pairs searched lately: a project's, for a number of windows
def _searching(project_id: int, windows: int, marks: tuple[str, str, str]) -> tuple[Prepared, Prepared]:
    """`ranking` and `hits` for the project, their match, window_0… (`windows`), window, limit and
    ids parameters."""
    match = sa.bindparam("match", type_=sa.String)
    expressions = [sa.bindparam(f"window_{i}", type_=sa.String) for i in range(windows)]
    ids: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
    return (
        Prepared(ranking(project_id, match, expressions, sa.bindparam("window"), sa.bindparam("limit"))),
        Prepared(hits(project_id, match, ids, marks)),
    )


def in_windows(
    project_id: int, expressions: list[str] | list[sa.BindParameter[str]], window: int | sa.BindParameter[Any]
) -> sa.ColumnElement[bool]:
    """The FTS5 table's row is among the newest `window` matches of one of the FTS5 `expressions`
    (`windows`). Written `+rowid`, the test is not handed to FTS5, which would run the whole query
    again for each id: SQLite makes the candidates' ids once and FTS5 walks the query's matches as
    it would without the test, scoring those among them only. No `expressions`: no test (every
    match a candidate)."""
    if not expressions:
        return sa.true()
    members = []
    for expression in expressions:
        fts, ref = _fts(project_id)
        newest = sa.select(fts.c.rowid).where(ref.op("MATCH")(expression))
        found = newest.order_by(fts.c.rowid.desc()).limit(window).subquery()
        members.append(sa.select(found.c.rowid))
    return sa.literal_column(f"+{table_name(project_id)}.rowid").in_(sa.union_all(*members))


def _fts(project_id: int) -> tuple[sa.TableClause, sa.ColumnClause[Any]]:
    t = table_name(project_id)
    return sa.table(t, sa.column("rowid")), sa.literal_column(t)


def ranking(
    project_id: int,
    match: str | sa.BindParameter[str],
    expressions: list[str] | list[sa.BindParameter[str]],
    window: int | sa.BindParameter[Any],
    limit: int | sa.BindParameter[Any],
) -> sa.Select[Any]:
    """The ids and bm25 of the project's best `limit` candidates (`in_windows` of the `expressions`),
    from its FTS5 table alone."""
    fts, ref = _fts(project_id)
    rank = sa.func.bm25(ref, *WEIGHTS).label("rank")
    return (
        sa.select(fts.c.rowid.label("id"), rank)
        .where(ref.op("MATCH")(match), in_windows(project_id, expressions, window))
        .order_by(rank, fts.c.rowid)
        .limit(limit)
    )


def hits(
    project_id: int,
    match: str | sa.BindParameter[str],
    ids: list[int] | sa.BindParameter[Any],
    marks: tuple[str, str, str],
) -> sa.Select[Any]:
    """The entries `ids` of the project, with their snippets for `match`."""
    fts, ref = _fts(project_id)
    return _entries(fts, ref, marks).where(
        ref.op("MATCH")(match), fts.c.rowid.in_(ids), knowledge.c.project_id == project_id
    )


def _entries(fts: sa.TableClause, ref: sa.ColumnClause[Any], marks: tuple[str, str, str]) -> sa.Select[Any]:
    """A hit's columns of `knowledge` and its snippet, for the FTS5 table's rows joined to theirs.

    The snippet is the body's when the body matches, else the title's (as on PostgreSQL), never
    the tags' column: FTS5 indexes the tags as their JSON text, and a hit on a tag showed
    `["«alpha»", "beta-gamma"]` (the tags come with the hit on their own)."""
    body = sa.func.snippet(ref, 1, *marks, 16)
    snippet = sa.case((sa.func.instr(body, marks[0]) > 0, body), else_=sa.func.snippet(ref, 0, *marks, 16))
    return sa.select(
        knowledge.c.id,
        knowledge.c.title,
        knowledge.c.kind,
        knowledge.c.tags,
        snippet.label("snippet"),
    ).select_from(fts.join(knowledge, knowledge.c.id == fts.c.rowid))


def _hit(row: sa.Row[Any], score: float) -> KnowledgeHit:
    return KnowledgeHit(
        id=row.id,
        title=row.title,
        kind=KnowledgeKind(row.kind),
        tags=list(row.tags),
        score=round(float(score), 6),
        snippet=row.snippet or "",
    )
