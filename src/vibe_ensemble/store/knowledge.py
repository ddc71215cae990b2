"""Knowledge entries, their earlier versions, and ranked full-text search.

Search is built from word tokens that this module extracts and quotes itself, so
no user text ever reaches a query parser: SQLite gets an FTS5 expression of
quoted terms over the project's own FTS5 table (`knowledge_rank`; kept by triggers),
ranked by FTS5's bm25, whose statistics are then the project's alone; PostgreSQL an OR of
`plainto_tsquery` terms ranked by ts_rank over the generated `search` column,
which reads nothing but the row. So no score depends on another project's rows.
Past `knowledge_rank.ALL_RANKED` matches (of the kind and tags asked for), a search ranks each
word's newest `knowledge_rank.WINDOW` such matches (and as many in a title or tags): FTS5 queries
on SQLite (whose tables index the kind and tag keys too), the rows of `knowledge_terms` on
PostgreSQL (each entry's lexemes, with its kind and tag keys, kept by a trigger: migrations 0015
and 0016), read newest first from its index.
An entry matches when it contains any of the words; on SQLite entries with more
and rarer matches rank first, on PostgreSQL entries with more (and title) matches.
Both mark matches in the snippet with « and ».
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.errors import NotFound
from vibe_ensemble.domain.models import KnowledgeEntry, KnowledgeHit, KnowledgeVersion
from vibe_ensemble.store import knowledge_rank as rank
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, first_record, records
from vibe_ensemble.store.tables import json_array_contains, knowledge, knowledge_versions, projects

MARK_START = "«"
MARK_END = "»"
ELLIPSIS = "…"
MAX_TERMS = 32
_WORD = re.compile(r"[^\W_]+")

_search: sa.ColumnClause[Any] = sa.literal_column("knowledge.search")  # PostgreSQL only
# PostgreSQL only (migrations 0015 and 0016, kept by a trigger): a row per entry and lexeme of its
# `search`, `heading` when the title or tags hold it, the entry's kind and its tag keys (NULL for
# none); keyed (project_id, term, entry_id), the kind and keys carried in the indexes
_terms = sa.table(
    "knowledge_terms",
    sa.column("project_id", sa.BigInteger),
    sa.column("term", sa.String),
    sa.column("entry_id", sa.BigInteger),
    sa.column("heading", sa.Boolean),
    sa.column("kind", sa.String),
    sa.column("tag_keys", postgresql.ARRAY(sa.Text)),
)
# PostgreSQL: what keeps `knowledge_terms` (migrations 0015 and 0016), dropped
DROP_TERMS = [
    "DROP TRIGGER IF EXISTS knowledge_terms_kept ON knowledge",
    "DROP FUNCTION IF EXISTS knowledge_terms_keep()",
    "DROP TABLE IF EXISTS knowledge_terms",
]


def terms_ddl(*, narrowing: bool = True) -> list[str]:
    """PostgreSQL: `knowledge_terms`, its indexes, the function and trigger that keep it, and its rows
    written for the entries there are: with each entry's kind and tag keys (`narrowing`, migration
    0016), or as migration 0015 made it. Every name and column below is this module's."""
    extra_columns = "kind VARCHAR(16) NOT NULL, tag_keys TEXT[], " if narrowing else ""
    include = " INCLUDE (kind, tag_keys)" if narrowing else ""
    columns = "project_id, term, entry_id, heading" + (", kind, tag_keys" if narrowing else "")
    of_narrowing = "kind, tag_keys, " if narrowing else ""

    def narrowed(row: str) -> str:
        """The kind and tag keys of an entry (`NEW`, `k`): its keys as text (an older release's entry
        without keys: its tags as written, as the tag filter reads them), NULL for none."""
        if not narrowing:
            return ""
        keys = f"coalesce({row}.tag_keys, {row}.tags)"
        return f", {row}.kind, NULLIF(ARRAY(SELECT jsonb_array_elements_text({keys})), '{{}}')"

    return [
        "CREATE TABLE knowledge_terms ("
        "project_id BIGINT NOT NULL, "
        "term TEXT NOT NULL, "
        "entry_id BIGINT NOT NULL REFERENCES knowledge (id) ON DELETE CASCADE, "
        f"heading BOOLEAN NOT NULL, {extra_columns}"
        f"CONSTRAINT pk_knowledge_terms PRIMARY KEY (project_id, term, entry_id){include})",
        # the newest entries holding a word in a title or tags
        "CREATE INDEX ix_knowledge_terms_heading ON knowledge_terms (project_id, term, entry_id)"
        f"{include} WHERE heading",
        # an entry's rows, found to be replaced when it is edited
        "CREATE INDEX ix_knowledge_terms_entry_id ON knowledge_terms (entry_id)",
        # An entry's terms: each lexeme of its `search` vector once, and whether its title or tags hold it.
        "CREATE FUNCTION knowledge_terms_keep() RETURNS trigger "  # noqa: S608  # nosec B608
        "LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'UPDATE' THEN DELETE FROM knowledge_terms WHERE entry_id = OLD.id; END IF; "
        f"INSERT INTO knowledge_terms ({columns}) "
        f"SELECT NEW.project_id, t.lexeme, NEW.id, t.weights && ARRAY['A', 'B']{narrowed('NEW')} "
        "FROM unnest(NEW.search) AS t; "
        "RETURN NULL; END $$",
        f"CREATE TRIGGER knowledge_terms_kept AFTER INSERT OR UPDATE OF project_id, {of_narrowing}title, "
        "body, tags ON knowledge FOR EACH ROW EXECUTE FUNCTION knowledge_terms_keep()",
        f"INSERT INTO knowledge_terms ({columns}) "  # noqa: S608  # nosec B608
        f"SELECT k.project_id, t.lexeme, k.id, t.weights && ARRAY['A', 'B']{narrowed('k')} "
        "FROM knowledge AS k, unnest(k.search) AS t",
        "ANALYZE knowledge_terms",
    ]


_headline_options = (
    f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=24, MinWords=8, ShortWord=2, "
    f"MaxFragments=2, FragmentDelimiter={ELLIPSIS}"
)


def words(text: str) -> list[str]:
    """The words of a text: runs of letters and digits, lowercased, de-duplicated."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))


def terms(text: str) -> list[str]:
    """The first MAX_TERMS words of a text the server made (a briefing's focus): a caller's query
    of more is refused instead (`services.knowledge.query_terms`)."""
    return words(text)[:MAX_TERMS]


def fts5_query(words: Iterable[str]) -> str:
    """An FTS5 expression matching any of the words, each quoted as a string (quotes doubled)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


# An entry's columns as `KnowledgeEntry` shows them: `tag_keys` is for matching in SQL, never read back
_SHOWN = [c for c in knowledge.c if c.name != "tag_keys"]
# What the tag filter matches: the tags' case folds, or an older release's entry's tags as written
_tag_keys = sa.func.coalesce(knowledge.c.tag_keys, knowledge.c.tags)


def _select() -> sa.Select[Any]:
    return sa.select(*_SHOWN, projects.c.slug).join(projects, knowledge.c.project_id == projects.c.id)


def _to_entry(row: sa.Row[Any]) -> KnowledgeEntry:
    return KnowledgeEntry(
        id=row.id,
        project=row.slug,
        kind=KnowledgeKind(row.kind),
        title=row.title,
        body=row.body,
        tags=list(row.tags),
        issue_ids=list(row.issue_ids),
        author=row.author,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _filters(
    conn: Connection, project_id: int, kind: KnowledgeKind | None, tags: list[str]
) -> list[sa.ColumnElement[bool]]:
    """The project's entries of `kind` (when given) carrying every one of the `tags` (by their
    `rules.label_keys`: in any letter case, `Postgres` finds `postgres`, as labels do)."""
    where = [knowledge.c.project_id == project_id]
    where += [json_array_contains(conn.dialect.name, _tag_keys, key) for key in rules.label_keys(tags)]
    if kind is not None:
        where.append(knowledge.c.kind == kind.value)
    return where


_GET = Prepared(
    _select().where(
        knowledge.c.id == sa.bindparam("id"), knowledge.c.project_id == sa.bindparam("project_id")
    )
)


async def get(conn: Connection, project_id: int, entry_id: int) -> KnowledgeEntry:
    row = first_record(await conn.execute(_GET, {"id": entry_id, "project_id": project_id}))
    if row is None:
        raise NotFound(f"knowledge entry {entry_id} does not exist in this project", id=entry_id)
    return _to_entry(row)


_VERSIONS = Prepared(
    sa.select(knowledge_versions)
    .where(knowledge_versions.c.knowledge_id == sa.bindparam("id"))
    .order_by(knowledge_versions.c.version.desc())
)


async def versions(conn: Connection, entry_id: int) -> list[KnowledgeVersion]:
    rows = records(await conn.execute(_VERSIONS, {"id": entry_id}))
    return [
        KnowledgeVersion(
            version=r.version,
            kind=KnowledgeKind(r.kind),
            title=r.title,
            body=r.body,
            tags=list(r.tags),
            issue_ids=list(r.issue_ids),
            author=r.author,
            created_at=r.created_at,
        )
        for r in rows
    ]


async def recent(
    conn: Connection,
    project_id: int,
    *,
    kind: KnowledgeKind | None = None,
    kinds: list[KnowledgeKind] | None = None,
    tags: list[str] | None = None,
    limit: int = 20,
) -> list[KnowledgeEntry]:
    """Entries most recently written first."""
    q = _select().where(*_filters(conn, project_id, kind, tags or []))
    if kinds:
        q = q.where(knowledge.c.kind.in_([k.value for k in kinds]))
    rows = await conn.execute(q.order_by(knowledge.c.updated_at.desc(), knowledge.c.id.desc()).limit(limit))
    return [_to_entry(r) for r in rows]


async def insert(
    conn: Connection,
    *,
    project_id: int,
    kind: KnowledgeKind,
    title: str,
    body: str,
    tags: list[str],
    issue_ids: list[int],
    author: str,
    now: datetime,
) -> int:
    if conn.dialect.name != "postgresql":
        await rank.ensure(conn, project_id)  # the project's search index, with its first entry
    result = await conn.execute(
        knowledge.insert()
        .values(
            project_id=project_id,
            kind=kind.value,
            title=title,
            body=body,
            tags=tags,
            tag_keys=rules.label_keys(tags),
            issue_ids=issue_ids,
            author=author,
            version=1,
            created_at=now,
            updated_at=now,
        )
        .returning(knowledge.c.id)
    )
    return int(result.scalar_one())


async def replace(conn: Connection, old: KnowledgeEntry, new: KnowledgeEntry) -> bool:
    """Keep `old` as a version and write `new` over it; False when `old` is no longer current."""
    result = await conn.execute(
        knowledge.update()
        .where(knowledge.c.id == old.id, knowledge.c.version == old.version)
        .values(
            kind=new.kind.value,
            title=new.title,
            body=new.body,
            tags=new.tags,
            tag_keys=rules.label_keys(new.tags),
            issue_ids=new.issue_ids,
            author=new.author,
            version=new.version,
            updated_at=new.updated_at,
        )
    )
    if result.rowcount != 1:
        return False
    await conn.execute(
        knowledge_versions.insert().values(
            knowledge_id=old.id,
            version=old.version,
            kind=old.kind.value,
            title=old.title,
            body=old.body,
            tags=old.tags,
            issue_ids=old.issue_ids,
            author=old.author,
            created_at=old.updated_at,
        )
    )
    return True


async def search(
    conn: Connection,
    project_id: int,
    words: list[str],
    *,
    kind: KnowledgeKind | None = None,
    tags: list[str] | None = None,
    limit: int = 10,
) -> list[KnowledgeHit]:
    """Entries matching any of `words`, most relevant first, scored from this project's rows only."""
    if not words:
        return []
    keys = rules.label_keys(tags or [])
    if conn.dialect.name != "postgresql":  # the project's own FTS5 table (store/knowledge_rank.py)
        marks = (MARK_START, MARK_END, ELLIPSIS)
        phrases = [fts5_query([w]) for w in words]
        return await rank.search(conn, project_id, phrases, kind.value if kind else None, keys, limit, marks)
    parameters: dict[str, Any] = {"project_id": project_id, "limit": limit}
    parameters.update((f"word_{i}", w) for i, w in enumerate(words))
    if kind is not None:
        parameters["kind"] = kind.value
    parameters.update((f"tag_{i}", k) for i, k in enumerate(keys))
    # candidates from knowledge_terms (of the kind, carrying the tags): each word's newest past ALL_RANKED
    shape = (len(words), kind is not None, len(keys))
    many = await conn.execute(_postgres_many_of(*shape), {**parameters, "n": rank.ALL_RANKED + 1})
    windowed = bool(many.scalar_one())
    parameters["window"] = rank.WINDOW
    rows = records(await conn.execute(_postgres_ranked_of(*shape, windowed=windowed), parameters))
    return [
        KnowledgeHit(
            id=r.id,
            title=r.title,
            kind=KnowledgeKind(r.kind),
            tags=list(r.tags),
            score=round(float(r.score), 6),
            snippet=r.snippet or "",
        )
        for r in rows
    ]


def any_of_once(queries: list[sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """The tsqueries (one per bound word) joined by OR, as a scalar subquery: PostgreSQL works it
    out once per statement. Written in place, a generic plan (asyncpg's prepared statements get one
    after five runs) parsed it again for every row it tested and ranked: 42 ms against 15 ms for
    12,500 matching entries."""
    query = queries[0]
    for more in queries[1:]:
        query = query.op("||")(more)
    return sa.select(query).scalar_subquery()


def word_parameters(words: int) -> list[sa.BindParameter[str]]:
    """The parameters `word_0`… of a PostgreSQL search's statement (here and in `mail_search`)."""
    return [sa.bindparam(f"word_{i}", type_=sa.String) for i in range(words)]


def lexemes(words: list[sa.BindParameter[str]]) -> sa.ColumnElement[Any]:
    """The lexemes of the bound words (`word_0`…, or mail search's `stem_0`…) as `search` holds them:
    an array of text."""
    vector: sa.ColumnElement[Any] = sa.func.to_tsvector("english", words[0])
    for word in words[1:]:
        vector = vector.op("||")(sa.func.to_tsvector("english", word))
    return sa.func.tsvector_to_array(vector)


def _terms_of(kind: bool, tags: int) -> list[sa.ColumnElement[bool]]:
    """The project's (`project_id`) rows of `knowledge_terms`, of the `kind` parameter's entries with
    `kind`, of entries carrying the tag keys `tag_0`… (`tags` of them): tested in the index (which
    carries the kind and the keys), nothing read from `knowledge`."""
    where = [_terms.c.project_id == sa.bindparam("project_id")]
    if kind:
        where.append(_terms.c.kind == sa.bindparam("kind", type_=sa.String))
    if tags:  # (the keys' array made once, by a scalar subquery, not for each row)
        keys = postgresql.array([sa.bindparam(f"tag_{i}", type_=sa.String) for i in range(tags)])
        wanted = sa.select(sa.cast(keys, postgresql.ARRAY(sa.Text))).scalar_subquery()
        where.append(_terms.c.tag_keys.op("@>")(wanted))
    return where


@functools.lru_cache(maxsize=128)  # by how many words, of a kind or not, and how many tags
def _postgres_many_of(words: int, kind: bool, tags: int) -> Prepared:
    """Whether at least `n` of the project's entries (`project_id`; of the `kind` with `kind`,
    carrying `tags` tag keys) hold a stem of the words: walks of the terms' index, nothing read from
    `knowledge`. First each stem's rows up to `n`, stem after stem, stopping at a stem that has `n`
    (a word most entries hold: `n` rows read, not `n` for each word). Else every stem has fewer, and
    the entries holding any are counted exactly, each once however many stems it holds, among the
    first `n` rows times the number of stems (an entry has one row a stem, so that many rows hold at
    least `n` entries); a single stem's rows, all read by then, are fewer than `n` entries, so they
    are not read again."""
    stems = lexemes(word_parameters(words))
    in_project = _terms_of(kind, tags)
    n: sa.BindParameter[int] = sa.bindparam("n")
    stem = sa.func.unnest(stems).table_valued("term").render_derived()
    firsts = (  # a stem's first `n` rows (its own: correlated to the stem, not a join of each)
        sa.select(_terms.c.entry_id)
        .where(*in_project, _terms.c.term == stem.c.term)
        .limit(n)
        .correlate(stem)
        .subquery()
    )
    one_stem = sa.exists(
        sa.select(sa.literal_column("1"))
        .select_from(stem)
        .where(sa.select(sa.func.count()).select_from(firsts).scalar_subquery() >= n)
    )
    found = (
        sa.select(_terms.c.entry_id)
        .where(*in_project, _terms.c.term == sa.any_(stems))
        .limit(n * sa.func.cardinality(stems))
        .subquery()
    )
    all_stems = sa.select(sa.func.count(sa.distinct(found.c.entry_id))).scalar_subquery() >= n
    return Prepared(sa.select(sa.or_(one_stem, sa.and_(sa.func.cardinality(stems) > 1, all_stems))))


@functools.lru_cache(maxsize=256)  # by how many words, of a kind or not, how many tags, and windowed or not
def _postgres_ranked_of(words: int, kind: bool, tags: int, *, windowed: bool) -> Prepared:
    """PostgreSQL's search: the best `limit` of the project's entries (of the `kind` parameter with
    `kind`, carrying the tag keys `tag_0`…) holding a stem of the words, or with `windowed` of each
    stem's newest `window` such entries and its newest `window` holding it in a title or tags (the
    rows of `knowledge_terms`, walked backwards from the newest in its index). The candidates' ids
    are listed first (`ARRAY(SELECT …)`), and only those entries are read, tested against the query
    and ranked: joined instead, the planner read every match of the words in every project through
    the GIN index to rank them."""
    bound = word_parameters(words)
    stems = lexemes(bound)
    in_project = _terms_of(kind, tags)
    if windowed:
        stem = sa.func.unnest(stems).table_valued("term").render_derived()
        newest = []
        for also in ([], [_terms.c.heading]):
            window = (
                sa.select(_terms.c.entry_id)
                .where(*in_project, _terms.c.term == stem.c.term, *also)
                .order_by(_terms.c.entry_id.desc())
                .limit(sa.bindparam("window"))
                .lateral()
            )
            newest.append(sa.select(window.c.entry_id).select_from(stem).join(window, sa.true()))
        candidates = sa.union(*newest).scalar_subquery()
    else:
        candidates = (
            sa.select(_terms.c.entry_id).where(*in_project, _terms.c.term == sa.any_(stems)).scalar_subquery()
        )
    # The candidates are of the kind and carry the tags: the terms hold copies of both, which the
    # trigger writes with the entry, in its transaction, so they are not tested again on its row.
    where = [
        knowledge.c.id == sa.any_(sa.func.array(candidates)),
        knowledge.c.project_id == sa.bindparam("project_id"),
    ]
    return Prepared(_postgres_search(bound, where).limit(sa.bindparam("limit")))


def _postgres_search(
    words: list[str] | list[sa.BindParameter[str]], where: list[sa.ColumnElement[bool]]
) -> sa.Select[Any]:
    query = any_of_once([sa.func.plainto_tsquery("english", w) for w in words])
    rank = sa.func.ts_rank(_search, query)
    body_matches = sa.func.to_tsvector("english", knowledge.c.body).op("@@")(query)
    snippet = sa.case(
        (body_matches, sa.func.ts_headline("english", knowledge.c.body, query, _headline_options)),
        # the title's, never the tags' JSON text (the tags come with the hit on their own)
        else_=sa.func.ts_headline("english", knowledge.c.title, query, _headline_options),
    )
    return (
        sa.select(
            knowledge.c.id,
            knowledge.c.title,
            knowledge.c.kind,
            knowledge.c.tags,
            rank.label("score"),
            snippet.label("snippet"),
        )
        .where(_search.op("@@")(query), *where)
        .order_by(rank.desc(), knowledge.c.id)
    )
