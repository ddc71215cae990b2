"""Search scores come from the caller's project alone: adding rows to project B changes neither
the scores nor the order of project A's hits, on both databases. On SQLite the project-local bm25
is FTS5's own formula (equal to `bm25()` when the database holds one project), while FTS5's
`bm25()` itself would move with B's rows — which is the leak this guards against."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.services import Services
from vibe_ensemble.store import knowledge_rank
from vibe_ensemble.store.knowledge import fts5_query, terms

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
QUERIES = ["database locking", "locks tests", "httpx2 everywhere", "café tests database", "lock lock locking"]
A_ENTRIES = [
    ("Database locking", "Take the write lock early with BEGIN IMMEDIATE; retries hide contention.", ["db"]),
    (
        "Running the tests",
        "Set the database URL so the database tests run; locks are per project.",
        ["tests"],
    ),
    ("Use httpx2", "The frozen client is replaced by httpx2 everywhere, including tests.", ["deps"]),
    ("Café notes", "A short note about the café near the office, nothing about locking.", []),
    ("Long story", " ".join(["database"] * 3 + ["filler word"] * 40 + ["locking"]), ["db", "tests"]),
]


async def _fill(
    services: Services, admin: Caller, project: str, entries: list[tuple[str, str, list[str]]]
) -> None:
    for title, body, tags in entries:
        await services.knowledge.add(
            admin, project=project, agent="ann", kind=KnowledgeKind.NOTE, title=title, body=body, tags=tags
        )


async def _results(services: Services, admin: Caller) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for query in QUERIES:
        out[query] = [
            (h.id, h.score) for h in await services.knowledge.search(admin, query, project="a", limit=50)
        ]
    return out


async def _fts5_bm25(services: Services, query: str) -> dict[int, float]:
    """FTS5's own bm25 (negated, so higher is better) of every row matching `query`, whole table."""
    statement = sa.text(
        "SELECT rowid, -bm25(knowledge_fts, 10.0, 1.0, 5.0) FROM knowledge_fts WHERE knowledge_fts MATCH :q"
    )
    async with services.ctx.db.read() as conn:
        rows = await conn.execute(statement, {"q": fts5_query(terms(query))})
        return {int(r[0]): float(r[1]) for r in rows}


@pytest.fixture
async def two_projects(services: Services, admin: Caller) -> Services:
    for slug in ("a", "b"):
        await services.projects.create(admin, slug=slug)
        await services.agents.register(admin, name="ann", project=slug)
    await _fill(services, admin, "a", A_ENTRIES)
    return services


async def test_scores_in_a_ignore_rows_of_b(two_projects: Services, admin: Caller) -> None:
    services = two_projects
    before = await _results(services, admin)
    assert all(before[q] for q in QUERIES)
    assert len({score for hits in before.values() for _, score in hits}) > 5  # real, varied scores
    # B gets many rows that hold A's words (changing every document frequency and length average) …
    noisy = [
        (f"Database locking {i}", "locking database tests lock " * (i % 7 + 1), ["db"]) for i in range(40)
    ]
    await _fill(
        services,
        admin,
        "b",
        noisy + [(f"Unrelated {i}", "nothing shared here " * (i + 1), []) for i in range(20)],
    )
    # … and A's scores and order are exactly what they were.
    assert await _results(services, admin) == before


@SQLITE_ONLY
async def test_sqlite_scores_equal_fts5_bm25_over_one_project(two_projects: Services, admin: Caller) -> None:
    services = two_projects
    for query in QUERIES:
        ours = {
            hit.id: hit.score for hit in await services.knowledge.search(admin, query, project="a", limit=50)
        }
        reference = await _fts5_bm25(services, query)
        assert ours.keys() == reference.keys(), query
        for entry_id, score in ours.items():
            assert score == pytest.approx(reference[entry_id], rel=1e-9, abs=1e-6), (query, entry_id)


@SQLITE_ONLY
async def test_fts5_bm25_alone_would_leak(two_projects: Services, admin: Caller) -> None:
    """The check above can fail: FTS5's whole-table bm25 of A's rows moves when B grows."""
    services = two_projects
    before = await _fts5_bm25(services, "database locking")
    await _fill(services, admin, "b", [(f"Database locking {i}", "locking", []) for i in range(10)])
    after = await _fts5_bm25(services, "database locking")
    assert any(after[i] != pytest.approx(score) for i, score in before.items())


@SQLITE_ONLY
async def test_a_word_that_tokenises_to_a_phrase_counts_phrase_occurrences(
    two_projects: Services, admin: Caller
) -> None:
    project_id = (await two_projects.projects.get(admin, "a")).id
    async with two_projects.ctx.db.read() as conn:
        assert await knowledge_rank.phrases(conn, ["Locking", "café", "x²"]) == [
            ("lock",),
            ("cafe",),
            ("x²",),
        ]
        # "database locking" as one phrase: where "databas" is followed by "lock"
        freq = await knowledge_rank.frequencies(conn, project_id, ("databas", "lock"))
    first = min((await two_projects.knowledge.search(admin, "Database locking", project="a"))[:1])
    assert freq == {first.id: 10.0}  # the title of "Database locking" (weight 10), in no other row
