"""Knowledge search on SQLite, ranked by bm25 over the caller's project alone.

FTS5's own `bm25()` takes its statistics — the number of rows, their average length and
how many rows hold each term — from the whole `knowledge_fts` table, that is from every
project. A caller's scores would then move with what other projects hold: adding rows
that contain a word to project B lowers its weight in project A's scores, so A can learn
how common a word is in B. Here the same formula as FTS5's (k1 = 1.2, b = 0.75, the
column weights below) is computed from the project's own rows:

- which stemmed terms a query word becomes: the word is tokenised by a temporary FTS5
  table with the same tokenizer (`porter unicode61`) and read back through fts5vocab;
- how often each term occurs in each of the project's rows, per column: an fts5vocab
  `instance` table over `knowledge_fts`, looked up by term;
- each row's length in tokens: FTS5's `knowledge_fts_docsize` (one varint per column).

With one project in the database the scores equal FTS5's `bm25()` (tested). PostgreSQL's
`ts_rank` uses no statistics beyond the row itself, so it needs none of this.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.models import KnowledgeHit
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import knowledge

K1 = 1.2
B = 0.75
WEIGHTS = {"title": 10.0, "body": 1.0, "tags": 5.0}
TOKENIZER = "porter unicode61"  # as knowledge_fts was created with (migration 0001)

_SETUP = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.knowledge_terms USING fts5vocab(main, knowledge_fts, instance)",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words USING fts5(word, tokenize='{TOKENIZER}')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_terms USING fts5vocab(temp, query_words, instance)",
)
_OCCURRENCES = sa.text(
    "SELECT v.doc, v.col, v.offset FROM temp.knowledge_terms AS v JOIN knowledge AS k ON k.id = v.doc "
    "WHERE v.term = :term AND k.project_id = :project"
)
_COUNTS = sa.text(
    "SELECT v.doc, sum(CASE v.col WHEN 'title' THEN :title WHEN 'body' THEN :body ELSE :tags END) "
    "FROM temp.knowledge_terms AS v JOIN knowledge AS k ON k.id = v.doc "
    "WHERE v.term = :term AND k.project_id = :project GROUP BY v.doc"
)
_SIZES = sa.text(
    "SELECT d.id, d.sz FROM knowledge_fts_docsize AS d JOIN knowledge AS k ON k.id = d.id "
    "WHERE k.project_id = :project"
)

Phrase = tuple[str, ...]


async def _rows(conn: Connection, statement: sa.TextClause, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await conn.execute(statement, params)).all()]


async def _rows_of(conn: Connection, statement: sa.Select[Any]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await conn.execute(statement)).all()]


def tokens_in(blob: bytes) -> int:
    """The total of the varints in an FTS5 docsize blob: a row's length in tokens, all columns."""
    total = value = shift = 0
    for byte in blob:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            total, value, shift = total + value, 0, 0
    return total


async def phrases(conn: Connection, words: list[str]) -> list[Phrase]:
    """The terms each query word becomes under the index's tokenizer (usually one)."""
    for statement in _SETUP:
        await conn.execute(sa.text(statement))
    await conn.execute(sa.text("DELETE FROM temp.query_words"))
    rows = [{"i": i, "w": w} for i, w in enumerate(words)]
    await conn.execute(sa.text("INSERT INTO temp.query_words(rowid, word) VALUES (:i, :w)"), rows)
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for doc, term, offset in await _rows(conn, sa.text("SELECT doc, term, offset FROM temp.query_terms")):
        found[int(doc)].append((int(offset), str(term)))
    await conn.execute(sa.text("DELETE FROM temp.query_words"))
    return [tuple(term for _, term in sorted(found[i])) for i in range(len(words))]


async def frequencies(conn: Connection, project_id: int, phrase: Phrase) -> dict[int, float]:
    """For each of the project's rows holding `phrase`: its column-weighted number of occurrences."""
    freq: dict[int, float] = defaultdict(float)
    if len(phrase) == 1:
        rows = await _rows(conn, _COUNTS, term=phrase[0], project=project_id, **WEIGHTS)
        return {int(doc): float(weighted) for doc, weighted in rows}
    if not phrase:
        return {}
    at: list[set[tuple[int, str, int]]] = []
    for term in phrase:
        rows = await _rows(conn, _OCCURRENCES, term=term, project=project_id)
        at.append({(int(doc), str(col), int(offset)) for doc, col, offset in rows})
    for doc, col, offset in at[0]:
        if all((doc, col, offset + i) in at[i] for i in range(1, len(phrase))):
            freq[doc] += WEIGHTS[col]
    return dict(freq)


def idf(rows: int, hits: int) -> float:
    """FTS5's inverse document frequency (kept slightly positive for very common terms)."""
    value = math.log((rows - hits + 0.5) / (hits + 0.5))
    return value if value > 0.0 else 1e-6


async def search(
    conn: Connection, project_id: int, words: list[str], where: list[sa.ColumnElement[bool]]
) -> dict[int, float]:
    """The project's rows that hold any of `words` and pass `where`, each with its bm25 computed
    from the project's statistics (higher is better)."""
    length = {int(i): tokens_in(bytes(sz)) for i, sz in await _rows(conn, _SIZES, project=project_id)}
    rows = len(length)
    avgdl = (sum(length.values()) / rows if rows else 0.0) or 1.0
    per_phrase: list[tuple[float, dict[int, float]]] = []
    known: dict[Phrase, dict[int, float]] = {}
    for phrase in await phrases(conn, words):
        if phrase not in known:
            known[phrase] = await frequencies(conn, project_id, phrase)
        per_phrase.append((idf(rows, len(known[phrase])), known[phrase]))
    candidates = set().union(*(freq.keys() for freq in known.values()))
    if len(where) > 1:  # more than the project: kind or tags
        passing = {int(i) for (i,) in await _rows_of(conn, sa.select(knowledge.c.id).where(*where))}
        candidates &= passing
    total = dict.fromkeys(candidates, 0.0)
    for weight, freq in per_phrase:
        for doc in candidates:
            f = freq.get(doc, 0.0)
            total[doc] += weight * (f * (K1 + 1.0)) / (f + K1 * (1 - B + B * length.get(doc, 0) / avgdl))
    return total


def hit(row: sa.Row[Any], score: float) -> KnowledgeHit:
    return KnowledgeHit(
        id=row.id,
        title=row.title,
        kind=KnowledgeKind(row.kind),
        tags=list(row.tags),
        score=round(score, 6),
        snippet=row.snippet or "",
    )
