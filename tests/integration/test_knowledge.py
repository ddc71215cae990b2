"""Knowledge: add, versioned updates, links to issues, and ranked full-text search on both databases."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound, PermissionDenied, VersionConflict
from vibe_ensemble.services import Services

from .snapshot import snapshot


def bound(name: str) -> Caller:
    return Caller(credential_id=None, role=TokenRole.WORKER, agent=name, label=name)


@pytest.fixture
async def library(services: Services, admin: Caller) -> Services:
    """A project with a few entries whose words the tests search for."""
    await services.agents.register(admin, name="ann")
    ann = bound("ann")
    add = services.knowledge.add
    await add(
        ann,
        kind=KnowledgeKind.GUIDELINE,
        title="Database locking",
        body="Take the write lock early with BEGIN IMMEDIATE; retries hide real contention.",
        tags=["db", "sqlite"],
    )
    await add(
        ann,
        kind=KnowledgeKind.PRACTICE,
        title="Running the tests",
        body="Set the PostgreSQL URL so the database tests run; locks are per project.",
        tags=["tests"],
    )
    await add(
        ann,
        kind=KnowledgeKind.DECISION,
        title="Use httpx2",
        body="The frozen client is replaced by httpx2 everywhere, including tests.",
        tags=["deps"],
    )
    await add(
        ann,
        kind=KnowledgeKind.NOTE,
        title="Émoji 🎉 and café",
        body='Titles may hold any text: naïve résumé, quotes "like this" and O\'Brien.',
    )
    return services


async def test_add_and_get(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="ann")
    issue = await services.issues.create(admin, title="Speed up CI")
    entry = await services.knowledge.add(
        bound("ann"),
        kind=KnowledgeKind.PATTERN,
        title="  Cache the venv  ",
        body="Key it on the lock file.",
        tags=["ci", "ci", "speed"],
        issue_ids=[issue.id],
    )
    assert (entry.title, entry.author, entry.version) == ("Cache the venv", "ann", 1)
    assert entry.tags == ["ci", "speed"] and entry.issue_ids == [issue.id]
    detail = await services.knowledge.get(admin, entry.id)
    assert detail.entry == entry and detail.versions == []
    [event] = (await services.events.page(admin, types=["knowledge.added"])).items
    assert event.actor == "ann" and event.payload["id"] == entry.id and event.payload["kind"] == "pattern"
    with pytest.raises(NotFound):
        await services.knowledge.get(admin, entry.id + 100)


BAD_INPUT: list[tuple[dict[str, object], str]] = [
    ({"title": " "}, "title"),
    ({"body": ""}, "body"),
    ({"title": "x" * 201}, "title"),
    ({"tags": ["ok", " "]}, "tags[1]"),
    ({"issue_ids": [999]}, "issue_ids"),
    ({"issue_ids": [0]}, "issue_ids"),
    ({"issue_ids": list(range(1, 60))}, "issue_ids"),
]


async def test_bad_input_names_the_field_and_changes_nothing(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="ann")
    before = await snapshot(services.ctx.db)
    for kwargs, field in BAD_INPUT:
        args: dict[str, object] = {"kind": KnowledgeKind.NOTE, "title": "t", "body": "b", **kwargs}
        with pytest.raises(InvalidInput) as exc:
            await services.knowledge.add(bound("ann"), **args)  # type: ignore[arg-type]
        assert exc.value.field == field, kwargs
    assert await snapshot(services.ctx.db) == before


async def test_updates_keep_every_previous_version(library: Services, admin: Caller) -> None:
    [hit] = await library.knowledge.search(admin, "httpx2", limit=1)
    await library.agents.register(admin, name="bob")
    v1 = (await library.knowledge.get(admin, hit.id)).entry
    v2 = await library.knowledge.update(bound("bob"), hit.id, body="Use httpx2; never the frozen client.")
    assert (v2.version, v2.author, v2.title, v2.body) == (
        2,
        "bob",
        v1.title,
        "Use httpx2; never the frozen client.",
    )
    v3 = await library.knowledge.update(
        bound("bob"), hit.id, kind=KnowledgeKind.GUIDELINE, tags=["deps", "http"], expected_version=2
    )
    assert v3.version == 3 and v3.kind == KnowledgeKind.GUIDELINE
    detail = await library.knowledge.get(admin, hit.id)
    assert detail.entry == v3
    assert [(v.version, v.author, v.body) for v in detail.versions] == [
        (2, "bob", v2.body),
        (1, "ann", v1.body),
    ]
    assert detail.versions[1].created_at == v1.updated_at
    assert detail.versions[0].kind == KnowledgeKind.DECISION
    # a stale writer is told, and nothing changes
    before = await snapshot(library.ctx.db)
    with pytest.raises(VersionConflict) as exc:
        await library.knowledge.update(bound("bob"), hit.id, title="Stale", expected_version=2)
    assert exc.value.details == {"id": hit.id, "current_version": 3, "expected_version": 2}
    # an update that changes nothing writes no version
    same = await library.knowledge.update(bound("bob"), hit.id, title=v3.title)
    assert same == v3
    assert await snapshot(library.ctx.db) == before
    with pytest.raises(InvalidInput) as bad:
        await library.knowledge.update(bound("bob"), hit.id)
    assert bad.value.field == "fields"
    updated = (await library.events.page(admin, types=["knowledge.updated"])).items
    assert [(e.payload["version"], e.payload["changed"]) for e in updated] == [
        (2, ["body"]),
        (3, ["kind", "tags"]),
    ]
    # the search index follows the update
    assert [h.id for h in await library.knowledge.search(admin, "never")] == [hit.id]


async def test_a_snippet_is_the_bodys_or_the_titles_never_the_tags_json(
    library: Services, admin: Caller
) -> None:
    """A hit on a tag showed the tags' JSON text (`["«alpha»", "beta-gamma"]` on SQLite, `«Zebra» crossing
    ["alpha", "beta-gamma` on PostgreSQL); the tags come with the hit on their own."""
    await library.knowledge.add(
        bound("ann"),
        kind=KnowledgeKind.NOTE,
        title="Zebra crossing",
        body="nothing here",
        tags=["alpha", "beta-gamma"],
    )
    [by_tag] = await library.knowledge.search(admin, "alpha")
    assert (by_tag.title, by_tag.tags) == ("Zebra crossing", ["alpha", "beta-gamma"])
    assert "[" not in by_tag.snippet and "alpha" not in by_tag.snippet and "Zebra crossing" in by_tag.snippet
    [by_title] = await library.knowledge.search(admin, "zebra")
    assert by_title.snippet == "«Zebra» crossing"


async def test_search_is_ranked_with_marked_snippets(library: Services, admin: Caller) -> None:
    hits = await library.knowledge.search(admin, "database locking")
    titles = [h.title for h in hits]
    # the title match ranks first; the body-only matches follow
    assert titles[0] == "Database locking"
    assert set(titles) == {"Database locking", "Running the tests"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all("«" in h.snippet and "»" in h.snippet for h in hits)
    second = hits[1]
    assert {f.name for f in dataclasses.fields(second)} == {"id", "title", "kind", "tags", "score", "snippet"}
    assert second.kind == KnowledgeKind.PRACTICE and second.tags == ["tests"]
    # stemming: "locks" finds "locking" and "lock"
    assert {h.title for h in await library.knowledge.search(admin, "locks")} == set(titles)
    # filters
    assert [h.title for h in await library.knowledge.search(admin, "tests", kind=KnowledgeKind.DECISION)] == [
        "Use httpx2"
    ]
    assert [h.title for h in await library.knowledge.search(admin, "lock", tags=["db", "sqlite"])] == [
        "Database locking"
    ]
    assert await library.knowledge.search(admin, "lock", tags=["db", "tests"]) == []
    assert len(await library.knowledge.search(admin, "the tests locks database httpx2", limit=2)) == 2
    # unicode words match, whatever the accents
    assert [h.title for h in await library.knowledge.search(admin, "CAFÉ")] == ["Émoji 🎉 and café"]


async def test_search_stays_in_its_project(library: Services, admin: Caller) -> None:
    await library.projects.create(admin, slug="other")
    await library.agents.register(admin, name="zed", project="other")
    await library.knowledge.add(
        admin, project="other", agent="zed", kind=KnowledgeKind.NOTE, title="Database locking too", body="x"
    )
    assert len(await library.knowledge.search(admin, "locking")) == 2
    assert [h.title for h in await library.knowledge.search(admin, "locking", project="other")] == [
        "Database locking too"
    ]
    scoped = Caller(credential_id=None, role=TokenRole.VIEWER, project="other")
    assert [h.title for h in await library.knowledge.search(scoped, "locking")] == ["Database locking too"]
    with pytest.raises(PermissionDenied):
        await library.knowledge.add(scoped, kind=KnowledgeKind.NOTE, title="t", body="b", agent="zed")


async def test_search_limits(library: Services, admin: Caller) -> None:
    with pytest.raises(InvalidInput) as exc:
        await library.knowledge.search(admin, "x" * 1001)
    assert exc.value.field == "query"
    with pytest.raises(InvalidInput) as exc:
        await library.knowledge.search(admin, "x", limit=51)
    assert exc.value.field == "limit"
    assert await library.knowledge.search(admin, "") == []
    assert await library.knowledge.search(admin, "  !!! ... ") == []
    # past 32 words a query is refused, never cut short unsaid (a repeated word counts once)
    words = [f"w{i}" for i in range(32)]
    with pytest.raises(InvalidInput, match=r"^query: at most 32 words \(got 33\)$"):
        await library.knowledge.search(admin, " ".join([*words, "locking"]))
    hits = await library.knowledge.search(admin, " ".join([*words[:31], "locking", "locking", "w0"]))
    assert "Database locking" in {h.title for h in hits}
    with pytest.raises(InvalidInput, match=r"^q: at most 32 words \(got 40\)$"):
        await library.threads.search(admin, " ".join(f"x{i}" for i in range(40)))


NASTY = [
    '"',
    '""',
    "'",
    'lock"',
    "NEAR(lock db, 2)",
    "lock AND OR NOT",
    "title:lock",
    "^lock",
    "lock*",
    "-lock",
    "(lock",
    "lock)",
    "((()))",
    "'; DROP TABLE knowledge; --",
    "1=1 OR 'a'='a'",
    "%_%",
    "\\",
    "\x00lock",
    "🎉",
    "🎉 lock 🎉",
    "<mark>lock</mark>",
    "«lock»",
    "lock & tests | !db",
    "lock <-> tests",
    "ǅ Ⅻ ² \u3007",
]


async def test_any_query_text_is_safe(library: Services, admin: Caller) -> None:
    for query in NASTY:
        hits = await library.knowledge.search(admin, query)
        if "lock" in query.lower():
            assert "Database locking" in {h.title for h in hits}, query


VOCABULARY = ["locking", "database", "httpx2", "tests", "café", "résumé", "contention", "immediate"]
junk = st.lists(
    st.sampled_from([*"\"'()*:^-+&|!<>@#%{}[]~`\\;,.?/ \t\n🎉«»", "NEAR", "AND", "OR", "NOT", " "]),
    max_size=8,
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=junk, word=st.sampled_from(VOCABULARY), after=junk, noise=st.text(max_size=30))
async def test_search_never_fails_and_finds_a_word_among_junk(
    library: Services, admin: Caller, before: str, word: str, after: str, noise: str
) -> None:
    # arbitrary text alone: never a server error, always well-formed hits
    for hit in await library.knowledge.search(admin, noise):
        assert hit.id > 0 and isinstance(hit.snippet, str)
    # a real word wrapped in operators and punctuation is still found
    hits = await library.knowledge.search(admin, f"{before} {word} {after}")
    assert hits, f"{word!r} not found"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_the_tag_filter_matches_any_letter_case(services: Services, admin: Caller) -> None:
    """Tags were matched exactly as written: `list_knowledge`/`search_knowledge` under `postgres`
    missed an entry tagged `Postgres` (issue labels match in any case). Tags stay as written; the
    filter compares their Unicode case folds (`STRASSE` finds `Straße`), in lists and searches, and
    after an update replaces the tags."""
    db = await services.knowledge.add(
        admin,
        kind=KnowledgeKind.PATTERN,
        title="Pool sizing",
        body="Size the pool.",
        tags=["Postgres", "Straße"],
    )
    lite = await services.knowledge.add(
        admin, kind=KnowledgeKind.PATTERN, title="WAL mode", body="Size the pool.", tags=["sqlite"]
    )

    async def listed(*tags: str) -> list[int]:
        return [e.id for e in await services.knowledge.list(admin, tags=list(tags))]

    async def found(*tags: str) -> list[int]:
        return [h.id for h in await services.knowledge.search(admin, "pool", tags=list(tags))]

    assert await listed("postgres") == [db.id] == await found("POSTGRES")
    assert await listed("STRASSE", "postgres") == [db.id] == await found("strasse")
    assert await listed("SQLite") == [lite.id] == await found("SQLITE")
    assert await listed("postgres", "sqlite") == [] == await found("postgres", "sqlite")
    assert (await services.knowledge.get(admin, db.id)).entry.tags == ["Postgres", "Straße"]  # as written
    await services.knowledge.update(admin, db.id, tags=["MySQL"])
    assert await listed("mysql") == [db.id] == await found("MYSQL")
    assert await listed("postgres") == [] == await found("postgres")
