"""Full-text search of mail (subject and body), ranked, on both backends.

SQLite: one external-content FTS5 table per project, `messages_fts_<project id>`, over that
project's rows of `messages` (kept by three triggers, each guarded by `project_id`). A project's
table is made with the project, in the same transaction (`ensure`, from `projects.insert`), and by
migration 0006 for projects that existed before, so every project has one and a search does not
look for it first. The candidates are ranked here, by `score` (bm25 over the candidates, below),
not by FTS5's `bm25()`: that function counts, on every query, every row of the project holding
each word (a walk of the word's whole index), so a search for common words cost ~20 ms at 500,000
messages whatever the page. `score` reads the candidates only: which words each one holds in
which field (one FTS5 lookup per word and field, bounded to the candidates' rowids) and the
lengths of its fields.

PostgreSQL: a generated `search` tsvector (the subject weighted A, the body B); `ts_rank` reads
nothing but the row. The newest matches are found by a walk of the project's newest mail, then
through a GIN index of each message's words keyed by its project (`keys_ddl`, migration 0018), so
the index step reads the project's matches only (`_postgres`).

Ranked are the project's newest CANDIDATES matches, not all of them: mail grows without end, and
scoring every message that holds a common word took seconds at 100,000 messages; the newest
matches are also the likelier ones to be looked for. Snippets are made for the hits only.

`score` is bm25 (k1 = 1.2, b = 0.75, the subject weighing WEIGHTS[0] times the body, as FTS5
weighs columns) with the candidates as its collection: a word's rarity is how few candidates hold
it (Lucene's idf, which stays positive however common the word), a field's length is its
characters against the candidates' average, and a word counts once per field it is in (its
presence, not how often it occurs there: FTS5 gives SQL no per-row counts).

Who may read bodies decides what is searched: with `bodies` the subject and the body, without
it the subject alone (an FTS5 column filter; a tsquery restricted to weight A), so a search can
never reveal a body word by word. Queries are built from word tokens (`knowledge.terms`: letters
and digits only), quoted by this module, so no user text reaches a query parser. Matches in the
body's snippet are marked with « and » (rendered by the dashboard's `marked`, escaped).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa

from vibe_ensemble.domain.enums import Importance
from vibe_ensemble.domain.threads import MailHit
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.knowledge import (
    ELLIPSIS,
    MARK_END,
    MARK_START,
    any_of_once,
    fts5_query,
    lexemes,
    word_parameters,
)
from vibe_ensemble.store.prepared import Prepared, first_record, records
from vibe_ensemble.store.tables import messages

_m = messages
WEIGHTS = (5.0, 1.0)  # subject, body: FTS5's column order
COLUMNS = ("subject", "body")
K1, B = 1.2, 0.75  # bm25's term-frequency saturation and length normalisation
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


KEYS_FUNCTION = "vibe_mail_keys"
KEYS_INDEX = "ix_messages_search_keys"


def keys_ddl() -> list[str]:
    """PostgreSQL: `vibe_mail_keys(project_id, search)`, a message's words as index keys that name
    its project ("<project id> <lexeme>"), and the GIN index over them (migration 0018). A word the
    project's mail lacks is then an empty posting list, however many messages of other projects
    hold it: with the GIN index of `search` alone, the index step read every project's matches of
    the word to keep the project's (586 ms where 100,000 of other projects' messages hold it, at
    1,000,000 messages: bench/RESULTS.md, thirty-ninth round).

    The function is PARALLEL RESTRICTED: its `&&` has no statistics (an array of keys known only
    when the statement runs), so the planner guessed 10,000 matches and chose a parallel scan,
    whose workers took ~10 ms to start for a lookup of 0.1 ms."""
    return [
        keys_function_ddl("sql", replace=False),
        f"CREATE INDEX {KEYS_INDEX} ON messages USING GIN ({KEYS_FUNCTION}(project_id, search))",
    ]


_KEYS_QUERY = (
    "SELECT array_agg(project_id::text || ' ' || lexeme) FROM unnest(tsvector_to_array(search)) lexeme"
)


def keys_function_ddl(language: Literal["sql", "plpgsql"], *, replace: bool = True) -> str:
    """`vibe_mail_keys` in SQL (migration 0018) or in PL/pgSQL (0019), the same query: the index of
    the keys calls it for every message written. A SQL function whose body reads from a function
    (`unnest`) is not inlined, and its plan lasts one statement: parsed and planned again at every
    INSERT. PL/pgSQL keeps the query's plan for the connection (50 µs less of PostgreSQL's CPU a
    message: bench/RESULTS.md, forty-first round). The keys are the same, so replacing one by the
    other leaves the index as it is."""
    body = _KEYS_QUERY if language == "sql" else f"BEGIN RETURN ({_KEYS_QUERY}); END"
    create = "CREATE OR REPLACE" if replace else "CREATE"
    return (
        f"{create} FUNCTION {KEYS_FUNCTION}(project_id bigint, search tsvector) RETURNS text[] "
        f"LANGUAGE {language} IMMUTABLE STRICT PARALLEL RESTRICTED AS $$ {body} $$"
    )


def drop_keys_ddl() -> list[str]:
    return [
        f"DROP INDEX IF EXISTS {KEYS_INDEX}",
        f"DROP FUNCTION IF EXISTS {KEYS_FUNCTION}(bigint, tsvector)",
    ]


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
        rows = await _postgres(conn, project_id, words, bodies, limit)
        snippets = {r.id: r.snippet or "" for r in rows}
    else:
        match = fts5_query(words) if bodies else f"subject : ({fts5_query(words)})"
        rows = await _sqlite(conn, project_id, match, words, bodies, limit)
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


async def _sqlite(
    conn: Connection, project_id: int, match: str, words: list[str], bodies: bool, limit: int
) -> list[sa.Row[Any]]:
    """The best `limit` of the newest CANDIDATES matches by `score`, newest first among equals."""
    t = table_name(project_id)
    fields = COLUMNS if bodies else COLUMNS[:1]
    # The candidates (FTS5 walks its index newest first and stops there) and their fields' lengths.
    lengths = ", ".join(f"length(m.{f})" for f in fields)
    newest: sa.Result[Any] = await conn.execute(
        sa.text(
            f"SELECT c.id, {lengths} FROM (SELECT rowid AS id FROM {t} WHERE {t} MATCH :match "  # noqa: S608  # nosec B608
            "ORDER BY rowid DESC LIMIT :n) AS c JOIN messages AS m ON m.id = c.id"
        ),
        {"match": match, "n": CANDIDATES},
    )
    candidates: list[tuple[int, tuple[int, ...]]] = [(r[0], tuple(r[1:])) for r in newest]
    if not candidates:
        return []
    # Which word is in which field of which candidate: one lookup per (word, field), from the
    # oldest candidate's rowid up, so each reads the candidates' part of the index only.
    pairs = [(w, f) for w in range(len(words)) for f in range(len(fields))]
    lookup = " UNION ALL ".join(
        f"SELECT rowid, {w}, {f} FROM {t} WHERE {t} MATCH :q{w}_{f} AND rowid >= :lo"  # noqa: S608  # nosec B608
        for w, f in pairs
    )
    params: dict[str, Any] = {f"q{w}_{f}": f"{fields[f]} : {fts5_query([words[w]])}" for w, f in pairs}
    params["lo"] = min(c[0] for c in candidates)
    present = [tuple(r) for r in await conn.execute(sa.text(lookup), params)]
    best = score(candidates, present, len(words))[:limit]
    if not best:
        return []
    by_id = {r.id: r for r in await conn.execute(sa.select(*_columns()).where(_m.c.id.in_(best)))}
    return [by_id[i] for i in best if i in by_id]


def score(
    candidates: Sequence[tuple[int, tuple[int, ...]]],
    present: Sequence[tuple[int, int, int]],
    n_words: int,
) -> list[int]:
    """The candidates' ids, best first, newest first among equals: bm25 with the candidates as the
    collection (see the module's docstring). `candidates`: (id, the searched fields' lengths);
    `present`: (id, word, field) for each field of a candidate that holds the word."""
    size = {cid: sum(lengths) for cid, lengths in candidates}
    weight: dict[tuple[int, int], float] = {}  # (id, word) -> the weights of the fields holding it
    for cid, word, field in present:
        if cid in size:  # a row written after the candidates were read is not one of them
            weight[cid, word] = weight.get((cid, word), 0.0) + WEIGHTS[field]
    holders = [0] * n_words
    for _, word in weight:
        holders[word] += 1
    n = len(size)
    idf = [math.log(1 + (n - h + 0.5) / (h + 0.5)) for h in holders]
    average = (sum(size.values()) / n) or 1.0
    total = dict.fromkeys(size, 0.0)
    for (cid, word), f in weight.items():
        total[cid] += idf[word] * f * (K1 + 1) / (f + K1 * (1 - B + B * size[cid] / average))
    return sorted(total, key=lambda cid: (-total[cid], -cid))


async def _sqlite_snippets(conn: Connection, project_id: int, match: str, ids: list[int]) -> dict[int, str]:
    """FTS5's snippets of the bodies of these hits only (a snippet costs more than a score). The
    index is read as one range from the oldest hit up (`+rowid` keeps SQLite from turning the list
    into one index seek per hit instead: ten times slower on an index of many segments)."""
    if not ids:
        return {}
    t = table_name(project_id)
    query = sa.text(
        f"SELECT rowid, snippet({t}, 1, :start, :end, :ellipsis, :tokens) FROM {t} "  # noqa: S608  # nosec B608
        f"WHERE {t} MATCH :match AND rowid >= :lo AND +rowid IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    params = {
        "start": MARK_START,
        "end": MARK_END,
        "ellipsis": ELLIPSIS,
        "tokens": SNIPPET_TOKENS,
        "match": match,
        "lo": min(ids),
        "ids": ids,
    }
    found: list[Any] = list(await conn.execute(query, params))
    return {row[0]: row[1] or "" for row in found}


async def _postgres(
    conn: Connection, project_id: int, words: list[str], bodies: bool, limit: int
) -> list[Any]:
    """The best `limit` of the project's newest CANDIDATES matches, ranked by ts_rank, newest first
    among equals, with the body's snippet when `bodies`.

    The steps that find the candidates rank them as they test them (`ts_rank` of the row in hand),
    so only the page is read again, for its columns and snippets: ranked in a statement of its own,
    the 1,000 candidates of a rare word were read again one by one from all over the table (7 of the
    14 ms such a search took at 1,000,000 messages, bench/RESULTS.md, fortieth round)."""
    words_of = {f"word_{i}": w + ("" if bodies else ":A") for i, w in enumerate(words)}
    stems = {f"stem_{i}": w for i, w in enumerate(words)}  # the index step's keys (`_keys`)
    found = await _newest_matches(conn, project_id, words_of, stems)
    # best first, newest first among equals: the order `ORDER BY rank DESC, id DESC` gives, on the
    # same float4 ranks
    best = sorted(found, key=lambda match: (-match[1], -match[0]))[:limit]
    if not best:
        return []
    ids = [match_id for match_id, _ in best]
    page = _page_of(len(words), bodies)
    parameters = {"project_id": project_id, "ids": ids, **(words_of if bodies else {})}
    rows = {r.id: r for r in records(await conn.execute(page, parameters))}
    return [rows[match_id] for match_id in ids if match_id in rows]


WALK = 4 * CANDIDATES  # PostgreSQL: the newest messages a search first tests one by one
MAX_WALK = 12 * WALK  # and at most this many in all, where the words are common enough
_ABOVE_EVERY_ID = 2**63 - 1


async def _newest_matches(
    conn: Connection, project_id: int, words_of: dict[str, str], stems: dict[str, str]
) -> list[tuple[int, float]]:
    """The ids of the project's newest CANDIDATES messages matching the words, newest first, each
    with its rank (`ts_rank`).

    Found with a bounded cost whatever the words, because no plan PostgreSQL would choose alone
    does that: its estimate of a tsquery's matches is a guess, and at 1,000,000 messages it walked
    the project's whole mail for a word no message holds (~400 ms), or read every project's matches
    of a common word through the GIN index to sort them (~800 ms). So: the project's newest WALK
    messages are tested one by one, newest first (`ts_match_vq`, the function behind `@@`, which
    no index answers: the walk stays a walk, ~0.6 us a message). A word that many messages hold
    has its CANDIDATES there. Short of them, the walk goes on over as many older messages as the
    matches seen so far say would hold the rest (a quarter more), while the whole walk stays within
    MAX_WALK messages: a word in at least about 2.5 messages of a hundred (102 in the first walk).
    For a rarer word, the rest come from the GIN index of the project's words (`_older_of`), whose
    cost is the word's matches in the project. (Checked again for that index: ~2.5-3.9 us a match,
    ranked, against the walk's ~0.6-1.0 us a message. In a project of 500,000 messages the index
    step, which reads every older match, costs what walking to the CANDIDATES would where about 2.2
    messages of a hundred match: near where MAX_WALK stops, bench/RESULTS.md, fortieth round.)"""
    n = len(words_of)
    matches: list[tuple[int, float]] = []
    below, rows, walked = _ABOVE_EVERY_ID, WALK, 0
    while True:
        walk = first_record(
            await conn.execute(_WALK, {"project_id": project_id, "below": below, "walk": rows})
        )
        if walk is None or not walk.walked:  # nothing older than `below`
            return matches
        parameters = {
            "project_id": project_id,
            "boundary": walk.boundary,
            "below": below,
            "walk": rows,
            "n": CANDIDATES - len(matches),
            **words_of,
        }
        # the project's mail holds most ids of the walk's range: read the range; else list its ids
        dense = 2 * walk.walked > walk.newest - walk.boundary
        walk_of = _range_of(n) if dense else _listed_of(n)
        matches += [(r.id, r.rank) for r in records(await conn.execute(walk_of, parameters))]
        walked += walk.walked
        if len(matches) == CANDIDATES or walk.walked < rows:  # enough, or every message walked
            return matches
        below = walk.boundary
        if not matches:
            break
        rows = max(WALK, (CANDIDATES - len(matches)) * walked * 5 // (4 * len(matches)))
        if walked + rows > MAX_WALK:
            break
    parameters = {
        "project_id": project_id,
        "below": below,
        "n": CANDIDATES - len(matches),
        **words_of,
        **stems,
    }
    return matches + [(r.id, r.rank) for r in records(await conn.execute(_older_of(n), parameters))]


# The project's newest `walk` messages older than `below`: the (project_id, id) index alone
# (index-only, so no plan prefers the primary key's walk through every project's mail).
_walked_ids = messages.alias("walked")
_newest = (
    sa.select(_walked_ids.c.id)
    .where(_walked_ids.c.project_id == sa.bindparam("project_id"), _walked_ids.c.id < sa.bindparam("below"))
    .order_by(_walked_ids.c.id.desc())
    .limit(sa.bindparam("walk"))
)
# The oldest of them, the newest, and how many there are.
_walk = _newest.subquery()
_WALK = Prepared(
    sa.select(
        *[
            sa.func.min(_walk.c.id).label("boundary"),
            sa.func.max(_walk.c.id).label("newest"),
            sa.func.count().label("walked"),
        ]
    )
)


def _query(words: int) -> sa.ColumnElement[Any]:
    """The tsquery of the words (`word_0`…, each a word, with ":A" for subjects only: letters and
    digits, so `to_tsquery` never sees an operator), worked out once per statement."""
    return any_of_once([sa.func.to_tsquery("english", word) for word in word_parameters(words)])


@functools.lru_cache(maxsize=32)  # by how many words
def _range_of(words: int) -> Prepared:
    """The newest `n` matches among the project's messages from `boundary` to before `below`, tested
    one by one, newest first (`_tested`): for a project whose mail holds most ids of that range. A
    generic plan reads the range through the primary key, every project's messages in it, which
    there are few more than the project's."""
    return _tested(
        words,
        _m.c.project_id == sa.bindparam("project_id"),
        _m.c.id >= sa.bindparam("boundary"),
        _m.c.id < sa.bindparam("below"),
    )


@functools.lru_cache(maxsize=32)  # by how many words
def _listed_of(words: int) -> Prepared:
    """The same for a project whose mail is sparse among the others': the project's newest `walk`
    ids older than `below` listed first (`_newest`, its own index), then each message found by its
    id and tested. Read as a range, a generic plan walked the primary key through every project's
    mail in it: 400,000 rows and 110 ms for a project with one message in a hundred. Each listed id
    is a descent of the primary key, so for a project that holds most of the range this costs
    about twice what the range does (`_range_of`)."""
    return _tested(words, _m.c.id == sa.any_(sa.func.array(_newest.scalar_subquery())))


def _tested(words: int, *walked: sa.ColumnElement[bool]) -> Prepared:
    """The newest `n` of the messages `walked` that match the words, each tested by `ts_match_vq`
    (the test `@@` names, which no index answers: the walk stays a walk), and ranked."""
    query = _query(words)
    return Prepared(
        sa.select(_m.c.id, _rank(query))
        .where(*walked, sa.func.ts_match_vq(_search, query))
        .order_by(_m.c.id.desc())
        .limit(sa.bindparam("n"))
    )


def _rank(query: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A match's rank (`rank`): `ts_rank` of the row in hand, for a row that matched (in the list
    of what a statement gives, it is worked out for the rows it gives only)."""
    return sa.func.ts_rank(_search, query).label("rank")


@functools.lru_cache(maxsize=32)
def _older_of(words: int) -> Prepared:
    """The newest `n` matches older than `below`: the project's messages holding a word, found through
    the GIN index of their keys (`keys_ddl`; a word's keys, `_keys`), each tested by `@@` too (which
    says whether it is in the subject, for a search of subjects), then sorted. The project and age are
    tested on the rows (`+ 0`), not through the (project_id, id) index: ANDed with the GIN index's
    matches, that index's range of the project's mail (500,000 entries) cost 30 ms in a generic plan.
    A MATERIALIZED set, so the planner cannot turn it into a walk of the project's mail."""
    query = _query(words)
    found = (
        sa.select(_m.c.id, _rank(query))
        .where(
            getattr(sa.func, KEYS_FUNCTION)(_m.c.project_id, _search).op("&&")(_keys(words)),
            _m.c.project_id + sa.literal_column("0") == sa.bindparam("project_id"),
            _m.c.id + sa.literal_column("0") < sa.bindparam("below"),
            _search.op("@@")(query),
        )
        .cte("found")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return Prepared(sa.select(found.c.id, found.c.rank).order_by(found.c.id.desc()).limit(sa.bindparam("n")))


def _keys(words: int) -> sa.ColumnElement[Any]:
    """The index keys of the words (`stem_0`…, each a word as given) in the project `project_id`, as
    `vibe_mail_keys` makes a message's: "<project id> <lexeme>", the lexemes `to_tsvector` gives
    (a stop word none: a search of stop words alone matches nothing, as its tsquery does)."""
    bound = [sa.bindparam(f"stem_{i}", type_=sa.String) for i in range(words)]
    lexeme = sa.func.unnest(lexemes(bound)).column_valued("lexeme")
    key = (
        sa.cast(sa.bindparam("project_id", type_=sa.BigInteger), sa.Text)
        .op("||")(sa.literal_column("' '"))
        .op("||")(lexeme)
    )
    return sa.select(sa.func.array_agg(key)).scalar_subquery()


@functools.lru_cache(maxsize=64)  # by how many words, and bodies or subjects
def _page_of(words: int, bodies: bool) -> Prepared:
    """The project's messages `ids` (the page, ranked already): their columns, and with `bodies` the
    body's snippet."""
    snippet = (
        sa.func.ts_headline("english", _m.c.body, _query(words), _headline_options) if bodies else sa.null()
    )
    return Prepared(
        sa.select(*_columns(), snippet.label("snippet")).where(
            _m.c.id.in_(sa.bindparam("ids", expanding=True)), _m.c.project_id == sa.bindparam("project_id")
        )
    )
