"""Full-text search of mail on SQLite (a FTS5 table per project) and PostgreSQL (a tsvector): ranked,
scoped to the caller's project, bodies searched only for those who may read them, snippets marked
and escaped on the dashboard, and mail written before migration 0006 indexed by it."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx2
import pytest
from sqlalchemy.dialects import postgresql

from tests.conftest import insert_project, make_settings
from vibe_ensemble.api.app import create_app
from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store import mail_search, migrate
from vibe_ensemble.store.database import Database
from vibe_ensemble.store.prepared import Plan
from vibe_ensemble.store.tables import messages


async def _caller(services: Services, admin: Caller, role: TokenRole) -> Caller:
    cred, _ = await services.tokens.create(admin, role=role, label=role.value)
    return await services.tokens.authenticate_session(cred.id, "")


async def _mail(services: Services, admin: Caller, project: str, items: list[tuple[str, str]]) -> list[int]:
    await services.agents.register(admin, name="ada", role=AgentRole.COORDINATOR, project=project)
    await services.agents.register(admin, name="brook", project=project)
    ids = []
    for subject, body in items:
        sent = await services.messages.send(
            admin, agent="ada", subject=subject, body=body, to=["brook"], project=project
        )
        ids.append(sent.id)
    return ids


def _marked(snippet: str) -> set[str]:
    return {piece.split("»")[0].lower() for piece in snippet.split("«")[1:]}


async def test_mail_search_is_ranked_marked_and_scoped_to_the_project(
    services: Services, admin: Caller
) -> None:
    await _ranked_marked_and_scoped(services, admin)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_s_index_step_alone_is_ranked_marked_and_scoped_to_the_project(
    services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a walk of one message, every match but the newest comes from the index of the project's
    keys (`mail_search.keys_ddl`): the same answers, subjects only for who may not read bodies."""
    monkeypatch.setattr(mail_search, "WALK", 1)
    monkeypatch.setattr(mail_search, "MAX_WALK", 1)
    ran: list[int] = []
    made = mail_search._older_of
    monkeypatch.setattr(mail_search, "_older_of", lambda n: ran.append(n) or made(n))
    await _ranked_marked_and_scoped(services, admin)
    assert ran  # the index step ran


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("bodies", [True, False], ids=["subjects and bodies", "subjects"])
async def test_postgresql_s_page_is_in_ts_rank_s_order_whichever_step_found_its_candidates(
    database_url: str, services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch, bodies: bool
) -> None:
    """The candidates are ranked by the steps that find them (the walk and the index step), and
    only the page is read again: its order is PostgreSQL's own `ORDER BY ts_rank DESC, id DESC`
    over the same candidates, ties (equal ranks) newest first, the page cut at `limit`."""
    rng = random.Random(7)
    words = ["deploy", "rollback", "canary", "alpha", "beta", "gamma"]
    items = [
        (
            " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))),
            " ".join(rng.choice(words) for _ in range(9)),
        )
        for _ in range(30)
    ] + [("Deploy canary", "deploy the canary")] * 4  # equal ranks: the newest first
    await _mail(services, admin, "default", items)
    monkeypatch.setattr(mail_search, "WALK", 5)  # the newest 5 walked, the rest through the index
    monkeypatch.setattr(mail_search, "MAX_WALK", 5)
    ran: list[int] = []
    made = mail_search._older_of
    monkeypatch.setattr(mail_search, "_older_of", lambda n: ran.append(n) or made(n))
    caller = admin if bodies else await _caller(services, admin, TokenRole.WORKER)

    found = [h.id for h in await services.threads.search(caller, "deploy canary", limit=12)]

    weight = "" if bodies else ":A"
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        expected = await conn.fetch(
            "SELECT id FROM messages, to_tsquery('english', $1) q WHERE project_id = 1 AND search @@ q "
            "ORDER BY ts_rank(search, q) DESC, id DESC LIMIT 12",
            f"deploy{weight} | canary{weight}",
        )
    finally:
        await conn.close()
    assert ran  # the index step found some
    assert len(found) == 12
    assert found == [r["id"] for r in expected]


async def _ranked_marked_and_scoped(services: Services, admin: Caller) -> None:
    both, body_only, subject_only, _, _ = await _mail(
        services,
        admin,
        "default",
        [
            ("Database locking", "The database is locked by the migration."),
            ("Lunch", "Database maintenance tonight, expect some locking."),
            ("Locking order", "Take a before b."),
            ("Unrelated", "Nothing to see."),
            ("Deploy", "Staging is green."),
        ],
    )
    await services.projects.create(admin, slug="other")
    await _mail(services, admin, "other", [("Database locking", "database locking database locking")])

    hits = await services.threads.search(admin, "database LOCKING")
    assert [h.id for h in hits][:1] == [both]  # both words, in the subject and the body
    assert {h.id for h in hits} == {both, body_only, subject_only}  # nothing of "other"
    assert all(h.thread_id and h.sender == "ada" for h in hits)
    by_id = {h.id: h for h in hits}
    assert _marked(by_id[both].snippet) <= {"database", "locked"} and "«" in by_id[both].snippet
    assert "database" in _marked(by_id[body_only].snippet)
    assert [h.subject for h in await services.threads.search(admin, "locking", project="other")] == [
        "Database locking"
    ]
    assert len(await services.threads.search(admin, "database locking", limit=1)) == 1

    # Who may not read bodies searches subjects only, and sees no snippet.
    for role in (TokenRole.VIEWER, TokenRole.WORKER):
        reader = await _caller(services, admin, role)
        assert await services.threads.search(reader, "maintenance tonight") == []
        found = await services.threads.search(reader, "database locking")
        assert {h.id for h in found} == {both, subject_only}
        assert {h.snippet for h in found} == {""}
    coordinator = await _caller(services, admin, TokenRole.COORDINATOR)
    assert [h.id for h in await services.threads.search(coordinator, "maintenance")] == [body_only]

    # Query syntax is never passed on: operators and quotes are not words, column names are words.
    assert await services.threads.search(admin, 'subject : "x" OR NEAR( * ^ - ') == []
    assert await services.threads.search(admin, '" * ( : ^') == []
    assert await services.threads.search(admin, "") == []


async def test_the_dashboard_marks_matches_and_escapes_the_rest(runtime: Runtime) -> None:
    services = runtime.services
    token = await runtime.bootstrap_admin_token()
    assert token
    await _mail(services, SYSTEM, "default", [("<b>Alert</b>", "<script>alert(1)</script> needle « here")])
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        page = await http.get("/fragments/knowledge", params={"q": "needle"})
    assert page.status_code == 200
    html = page.text
    assert "<mark>needle</mark>" in html
    # SQLite's snippet keeps the tags (escaped here); PostgreSQL's ts_headline drops them
    assert "<script" not in html and "alert(1)" not in html.replace("&lt;script&gt;alert(1)", "")
    assert "<mark>needle</mark> « here" in html  # a stray mark is text
    assert "<b>Alert</b>" not in html and "&lt;b&gt;Alert&lt;/b&gt;" in html


async def test_migration_0006_indexes_mail_written_before_it(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0005")
        now = datetime.now(UTC)
        async with db.write() as conn:
            for slug in ("a", "b"):
                pid = await insert_project(conn, slug, now)
                await conn.execute(
                    messages.insert().values(
                        project_id=pid,
                        sender="ada",
                        subject=f"Backfilled {slug}",
                        body="an old conversation",
                        thread_id=f"t-{slug}",
                        importance="normal",
                        ack_required=False,
                        broadcast=False,
                        created_at=now,
                    )
                )
    finally:
        await db.dispose()
    rt = Runtime(make_settings(database_url, tmp_path))
    await rt.start(apply_migrations=True)
    try:
        hits = await rt.services.threads.search(SYSTEM, "old conversation", project="a")
        assert [(h.subject, _marked(h.snippet)) for h in hits] == [("Backfilled a", {"old", "conversation"})]
        # mail written now is indexed by its project's triggers (or generated column)
        await _mail(rt.services, SYSTEM, "b", [("Fresh", "a new conversation")])
        found = await rt.services.threads.search(SYSTEM, "conversation", project="b")
        assert sorted(h.subject for h in found) == ["Backfilled b", "Fresh"]
        await rt.services.projects.create(SYSTEM, slug="c")  # made after 0006: its index comes with it
        await _mail(rt.services, SYSTEM, "c", [("Third", "conversation")])
        assert [h.subject for h in await rt.services.threads.search(SYSTEM, "conversation", project="c")] == [
            "Third"
        ]
    finally:
        await rt.stop()


async def test_only_the_newest_candidates_are_ranked(
    services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    strongest, weaker, weakest = await _mail(
        services,
        admin,
        "default",
        [("Deploy deploy", "deploy the deploy"), ("Notes", "we deploy later"), ("Other", "a deploy")],
    )
    assert (await services.threads.search(admin, "deploy"))[0].id == strongest
    monkeypatch.setattr(mail_search, "CANDIDATES", 2)
    assert {h.id for h in await services.threads.search(admin, "deploy")} == {weaker, weakest}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("query", ["deploy", "deploy rollback"])
@pytest.mark.parametrize("sparse", [False, True], ids=["the project's mail dense", "sparse among another's"])
async def test_postgresql_finds_the_newest_candidates_by_walking_then_through_the_index(
    services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch, query: str, sparse: bool
) -> None:
    """PostgreSQL tests the project's newest WALK messages one by one (read as a range of ids, or,
    where another project's mail holds most of the range, by their ids listed), walks on (within
    MAX_WALK) where the matches seen say the rest are near, and finds the rest through the GIN
    index: the same newest CANDIDATES matches whichever step finds them, none of another project's."""
    await services.projects.create(admin, slug="o")
    await _mail(services, admin, "o", [])  # its agents
    items = [("Deploy", "deploy now") if i % 3 == 0 else ("Notes", "nothing here") for i in range(12)]
    items[1] = ("Rollback", "the rollback plan")
    ids = []
    for subject, body in items:
        ids += await _mail(services, admin, "default", [(subject, body)])
        for _ in range(3 if sparse else 0):  # the other project's, holding the words too
            await _mail(services, admin, "o", [("Deploy", "deploy the rollback")])
    words = query.split()
    matching = [i for i, (_, body) in zip(ids, items, strict=True) if any(w in body for w in words)]
    monkeypatch.setattr(mail_search, "CANDIDATES", 3)
    ran: list[str] = []
    for name in ("_older_of", "_range_of", "_listed_of"):
        made = getattr(mail_search, name)
        monkeypatch.setattr(
            mail_search, name, lambda n, *rest, made=made, name=name: ran.append(name) or made(n, *rest)
        )
    # all in the first walk; one match in it, the rest by walking on; the rest through the index
    # (walking on would pass MAX_WALK); none in the first walk, so the index; a walk of one message
    for walk, max_walk, indexed in (
        (1000, 1000, False),
        (4, 1000, False),
        (4, 4, True),
        (2, 1000, True),
        (1, 1, True),
    ):
        monkeypatch.setattr(mail_search, "WALK", walk)
        monkeypatch.setattr(mail_search, "MAX_WALK", max_walk)
        ran.clear()
        found = [h.id for h in await services.threads.search(admin, query, project="default")]
        assert sorted(found) == matching[-3:], (walk, max_walk)
        assert ("_older_of" in ran) == indexed, (walk, max_walk)
        # (a walk of one message is a range of one id, whoever holds the others)
        listed = sparse and walk > 1
        assert {"_listed_of" if listed else "_range_of"} == set(ran) - {"_older_of"}, (walk, ran)
    assert await services.threads.search(admin, "absent") == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_s_index_step_reads_the_project_s_keys_in_a_plain_scan(
    database_url: str, services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word the project's mail lacks but another project's holds: nothing found, through the index
    of keys that name the project. asyncpg's statements take a generic plan after five runs: the
    index step reads the index (its keys are the index's expression), in no parallel workers."""
    await services.projects.create(admin, slug="o")
    await _mail(services, admin, "o", [("Deploy", "zeppelin deploy") for _ in range(5)])
    await _mail(services, admin, "default", [("Notes", "nothing here")])
    monkeypatch.setattr(mail_search, "WALK", 1)
    monkeypatch.setattr(mail_search, "MAX_WALK", 1)
    for _ in range(7):  # past the fifth run: the generic plan
        assert await services.threads.search(admin, "zeppelin") == []
    assert [h.subject for h in await services.threads.search(admin, "zeppelin", project="o")] == [
        "Deploy"
    ] * 5

    older = mail_search._older_of(1).plan(postgresql.asyncpg.dialect())
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        # a few rows: a sequential scan would be cheaper here, where it is not at 1,000,000 messages;
        # what is checked is that the statement's keys are the index's (the same expression)
        await conn.execute("SET enable_seqscan = off")
        await conn.execute(f"PREPARE older AS {older.sql}")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE older({_literals(older)})"))
        # At 1,000,000 messages the planner, with no statistics for the keys' `&&`, chose a parallel
        # scan (~10 ms to start its workers, for a lookup of 0.1 ms): a function that is not
        # PARALLEL SAFE keeps the scan in the process that runs the statement.
        parallel = await conn.fetchval("SELECT proparallel FROM pg_proc WHERE proname = 'vibe_mail_keys'")
    finally:
        await conn.close()
    assert "ix_messages_search_keys" in plan and "Gather" not in plan, plan
    assert parallel == b"r"  # PARALLEL RESTRICTED (a "char", which asyncpg gives as bytes)
    assert "ix_messages_search " not in plan + " "  # 0006's index is gone


def _literals(plan: Plan) -> str:
    """The index step's parameters for the word `zeppelin` in project 1, as SQL literals in its
    statement's order (each text configuration the statement's own, `english`)."""
    given = {"project_id": 1, "stem_0": "zeppelin", "word_0": "zeppelin", "below": 2**62, "n": 1000}
    values = [given.get(name, plan.defaults.get(name)) for name, _ in plan.binds]
    return ", ".join(str(v) if isinstance(v, int) else f"'{v}'" for v in values)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL: ts_rank, above
async def test_sqlite_ranks_by_score_over_the_candidates_fields(services: Services, admin: Caller) -> None:
    """On SQLite the order is `mail_search.score` of what each candidate holds where, worked out here
    from the texts themselves: the FTS5 lookups and the lengths feed it faithfully."""
    words = ["deploy", "rollback", "canary"]
    rng = random.Random(3)
    vocabulary = [*words, "alpha", "beta", "gamma", "delta", "epsilon"]
    items = [
        (
            " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 4))),
            " ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 30))),
        )
        for _ in range(60)
    ]
    ids = await _mail(services, admin, "default", items)
    for bodies, caller in ((True, admin), (False, await _caller(services, admin, TokenRole.WORKER))):
        candidates, present = [], []
        for message_id, (subject, body) in zip(ids, items, strict=True):
            fields = (subject, body) if bodies else (subject,)
            held = [
                (w, f)
                for w, word in enumerate(words)
                for f, text in enumerate(fields)
                if word in text.split()
            ]
            if held:
                candidates.append((message_id, tuple(len(text) for text in fields)))
                present += [(message_id, w, f) for w, f in held]
        expected = mail_search.score(candidates, present, len(words))[:20]
        hits = await services.threads.search(caller, " ".join(words), limit=20)
        assert [h.id for h in hits] == expected, bodies
        assert len(expected) == 20
