"""Search scores come from the caller's project alone: adding rows to project B changes neither
the scores nor the order of project A's hits, on both databases. On SQLite each project has its own
FTS5 table, so the scores are FTS5's bm25 over the project's rows (checked against a reference
table the test builds from A's rows), while one FTS5 table for every project would move with B's
rows — which is the leak this guards against. Also: migration 0003 indexes entries written before it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import insert_project, make_settings
from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store import knowledge_rank, migrate
from vibe_ensemble.store.database import Database
from vibe_ensemble.store.knowledge import fts5_query, terms
from vibe_ensemble.store.knowledge_rank import TOKENIZER, values
from vibe_ensemble.store.tables import knowledge

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


async def _reference_bm25(services: Services, query: str, projects: tuple[str, ...]) -> dict[int, float]:
    """bm25 (negated: higher is better) of every row matching `query` in a scratch FTS5 table the
    test fills with the rows of `projects`, on a connection of its own."""
    ids = [(await services.projects.get(SYSTEM, p)).id for p in projects]
    marks = ",".join(str(i) for i in ids)
    with sqlite3.connect(str(services.ctx.db.path)) as conn:
        # the kind and tag keys are indexed beside the text (a search narrows by them) and weigh nothing
        columns = knowledge_rank.columns()
        conn.execute(f"CREATE VIRTUAL TABLE temp.ref USING fts5({columns}, tokenize='{TOKENIZER}')")
        conn.execute(
            f"INSERT INTO temp.ref(rowid, {columns}) "
            f"SELECT id, {values('knowledge')} FROM knowledge WHERE project_id IN ({marks})"
        )
        rows = conn.execute(
            "SELECT rowid, -bm25(ref, 10.0, 1.0, 5.0, 0.0, 0.0) FROM temp.ref WHERE ref MATCH ?",
            (fts5_query(terms(query)),),
        )
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
async def test_sqlite_scores_are_fts5_bm25_over_the_project_alone(
    two_projects: Services, admin: Caller
) -> None:
    services = two_projects
    await _fill(services, admin, "b", [(f"Database locking {i}", "locking tests", ["db"]) for i in range(10)])
    for query in QUERIES:
        ours = {
            hit.id: hit.score for hit in await services.knowledge.search(admin, query, project="a", limit=50)
        }
        reference = await _reference_bm25(services, query, ("a",))
        assert ours.keys() == reference.keys(), query
        for entry_id, score in ours.items():
            assert score == pytest.approx(reference[entry_id], rel=1e-9, abs=1e-6), (query, entry_id)


@SQLITE_ONLY
async def test_a_search_ranked_alone_and_one_narrowed_agree(two_projects: Services, admin: Caller) -> None:
    """Unnarrowed, the matches are ranked on the FTS5 table alone and the best read with their
    snippets afterwards; narrowed (a kind, tags), in one statement joined to `knowledge`. A kind every
    entry has narrows nothing: both give the same hits, in the same order, with the same snippets."""
    services = two_projects
    await _fill(services, admin, "b", [(f"Database locking {i}", "locking tests", ["db"]) for i in range(10)])
    for query in QUERIES:
        for limit in (1, 3, 50):
            alone = await services.knowledge.search(admin, query, project="a", limit=limit)
            narrowed = await services.knowledge.search(
                admin, query, project="a", limit=limit, kind=KnowledgeKind.NOTE
            )
            assert alone, (query, limit)
            assert alone == narrowed, (query, limit)
            assert [h.score for h in alone] == sorted((h.score for h in alone), reverse=True)
            assert any("«" in h.snippet for h in alone), query  # the marks of the matched words


@SQLITE_ONLY
async def test_one_table_for_all_projects_would_leak(two_projects: Services, admin: Caller) -> None:
    """The checks above can fail: bm25 of A's rows over a table holding B's rows too moves when B grows."""
    services = two_projects
    before = await _reference_bm25(services, "database locking", ("a", "b"))
    await _fill(services, admin, "b", [(f"Database locking {i}", "locking", []) for i in range(10)])
    after = await _reference_bm25(services, "database locking", ("a", "b"))
    assert any(after[i] != pytest.approx(score) for i, score in before.items())


@SQLITE_ONLY
async def test_migration_0003_indexes_entries_written_before_it(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0002")  # one FTS5 table for all projects, kept by triggers
        now = datetime.now(UTC)
        async with db.write() as conn:
            for slug in ("a", "b"):
                pid = await insert_project(conn, slug, now)
                for title, body, tags in A_ENTRIES:
                    await conn.execute(
                        knowledge.insert().values(
                            project_id=pid,
                            kind="note",
                            title=title,
                            body=body,
                            tags=tags,
                            issue_ids=[],
                            author="ann",
                            version=1,
                            created_at=now,
                            updated_at=now,
                        )
                    )
    finally:
        await db.dispose()
    rt = Runtime(make_settings(database_url, tmp_path))
    await rt.start(apply_migrations=True)
    try:
        hits = await rt.services.knowledge.search(SYSTEM, "database locking", project="a", limit=50)
        assert [h.title for h in hits][:1] == ["Database locking"]
        assert {h.id for h in hits} == {1, 2, 4, 5}  # A's entries holding either word, none of B's (6-10)
        assert await _reference_bm25(rt.services, "database locking", ("a",)) == {
            h.id: pytest.approx(h.score, abs=1e-6) for h in hits
        }
        # the old triggers are gone: entries written now go to their project's table only
        await rt.services.agents.register(SYSTEM, name="ann", project="b")
        await rt.services.knowledge.add(
            SYSTEM, project="b", agent="ann", kind=KnowledgeKind.NOTE, title="Locking anew", body="x"
        )
        found = await rt.services.knowledge.search(SYSTEM, "anew", project="b")
        assert [h.title for h in found] == ["Locking anew"]
        assert await rt.services.knowledge.search(SYSTEM, "anew", project="a") == []
    finally:
        await rt.stop()
