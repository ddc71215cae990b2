"""`Prepared` statements give exactly what SQLAlchemy's own execution gives, on both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import MultipleResultsFound, NoResultFound

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store.prepared import Prepared, first_record, records
from vibe_ensemble.store.tables import agents, message_recipients, messages, projects

BY_NAME = Prepared(
    sa.select(agents, projects.c.slug)
    .join(projects, agents.c.project_id == projects.c.id)
    .where(agents.c.project_id == sa.bindparam("project_id"), agents.c.name == sa.bindparam("name"))
)
# Inline literals, a boolean, a JSON column, datetimes, a NULL test, a count and an ORDER BY.
MIXED = Prepared(
    sa.select(
        messages.c.id,
        messages.c.subject,
        messages.c.broadcast,
        messages.c.created_at,
        message_recipients.c.read_at,
        agents.c.capabilities,
    )
    .join(message_recipients, message_recipients.c.message_id == messages.c.id)
    .join(agents, agents.c.id == message_recipients.c.agent_id)
    .where(messages.c.importance == "normal", message_recipients.c.acked_at.is_(None))
    .where(messages.c.id > sa.bindparam("after"))
    .order_by(messages.c.id)
)
COUNT = Prepared(sa.select(sa.func.count()).where(message_recipients.c.agent_id == sa.bindparam("agent_id")))


async def test_prepared_matches_sqlalchemy(runtime: Runtime, admin: Caller) -> None:
    services = runtime.services
    await services.agents.register(admin, name="ana", capabilities=["python", "sql"])
    await services.agents.register(admin, name="bo")
    for i in range(3):
        await services.messages.send(admin, agent="ana", to=["bo"], subject=f"hello {i}", body="b")
    async with runtime.db.read() as conn:
        project_id = (await conn.execute(sa.select(projects.c.id))).scalar_one()
        bo = (await conn.execute(sa.select(agents.c.id).where(agents.c.name == "bo"))).scalar_one()
        cases = [
            (BY_NAME, {"project_id": project_id, "name": "ana"}),
            (BY_NAME, {"project_id": project_id, "name": "nobody"}),
            (MIXED, {"after": 0}),
            (MIXED, {"after": 2}),
            (COUNT, {"agent_id": bo}),
        ]
        for prepared, params in cases:
            fast = await conn.execute(prepared, params)
            slow = await conn.execute(prepared.statement, params)
            columns = list(fast.keys())
            assert columns == list(slow.keys())
            assert fast.all() == slow.all()
            # Read as records (named tuples), every column reads as from SQLAlchemy's own rows.
            fast_records = records(await conn.execute(prepared, params))
            slow_rows = (await conn.execute(prepared.statement, params)).all()
            assert [tuple(r) for r in fast_records] == [tuple(r) for r in slow_rows]
            for record, row in zip(fast_records, slow_rows, strict=True):
                assert all(getattr(record, k) == getattr(row, k) for k in columns)
            first = first_record(await conn.execute(prepared, params))
            assert first == (fast_records[0] if fast_records else None)
        row = (await conn.execute(BY_NAME, {"project_id": project_id, "name": "ana"})).one()
        assert row.capabilities == ["python", "sql"]
        assert row.registered_at.tzinfo is not None
        assert (await conn.execute(COUNT, {"agent_id": bo})).scalar_one() == 3
        # One row of several columns: its first column, as SQLAlchemy's `scalar_one` gives.
        ana = {"project_id": project_id, "name": "ana"}
        first_column = (await conn.execute(BY_NAME.statement, ana)).scalar_one()
        assert (await conn.execute(BY_NAME, ana)).scalar_one() == first_column
        for none_or_many in ({"project_id": project_id, "name": "nobody"}, {"after": 0}):
            statement = BY_NAME if "name" in none_or_many else MIXED
            with pytest.raises((NoResultFound, MultipleResultsFound)):
                (await conn.execute(statement, none_or_many)).scalar_one()


IN_IDS = Prepared(
    sa.select(agents.c.id, agents.c.name)
    .where(agents.c.id.in_(sa.bindparam("ids", expanding=True)), agents.c.name != sa.bindparam("not_named"))
    .order_by(agents.c.id)
)
NOT_IN_IDS = Prepared(
    sa.select(agents.c.name)
    .where(agents.c.id.not_in(sa.bindparam("ids", expanding=True)))
    .order_by(agents.c.id)
)
NAMED = Prepared(
    sa.select(agents.c.id)
    .where(agents.c.name.in_(sa.bindparam("names", expanding=True)))
    .order_by(agents.c.id)
)
TWO_LISTS = Prepared(  # two lists, one of them used twice: each is one array parameter on PostgreSQL
    sa.select(agents.c.name)
    .where(
        sa.or_(
            agents.c.id.in_(sa.bindparam("ids", expanding=True)),
            agents.c.name.in_(sa.bindparam("names", expanding=True)),
        ),
        agents.c.id.not_in(sa.bindparam("ids", expanding=True))
        | (agents.c.name != sa.bindparam("not_named")),
    )
    .order_by(agents.c.id)
)
INSERT = Prepared.insert_row(messages)
INSERT_RECIPIENT = Prepared(
    message_recipients.insert().values(
        message_id=sa.bindparam("message_id"), agent_id=sa.bindparam("agent_id")
    )
)
MARK_READ = Prepared(
    message_recipients.update()
    .where(message_recipients.c.message_id == sa.bindparam("mid"), message_recipients.c.read_at.is_(None))
    .values(read_at=sa.bindparam("now"))
)


async def test_prepared_in_lists_match_sqlalchemy(runtime: Runtime, admin: Caller) -> None:
    services = runtime.services
    for name in ("ana", "bo", "cy"):
        await services.agents.register(admin, name=name)
    async with runtime.db.read() as conn:
        ids = list((await conn.execute(sa.select(agents.c.id).order_by(agents.c.id))).scalars())
        cases = [
            (IN_IDS, {"ids": ids, "not_named": "bo"}),
            (IN_IDS, {"ids": ids[:1], "not_named": "bo"}),
            (IN_IDS, {"ids": [], "not_named": "bo"}),  # an empty list: SQLAlchemy's own SQL for IN ()
            (NOT_IN_IDS, {"ids": ids[1:]}),
            (NOT_IN_IDS, {"ids": []}),
            (NAMED, {"names": ["cy", "ana", "nobody"]}),
            (NAMED, {"names": []}),
            (TWO_LISTS, {"ids": ids[:1], "names": ["cy"], "not_named": "ana"}),
        ]
        for prepared, params in cases:
            fast = (await conn.execute(prepared, params)).all()
            slow = (await conn.execute(prepared.statement, params)).all()
            assert fast == slow
        # On PostgreSQL a list is one array parameter (`= ANY($n)`): the statement stays on asyncpg.
        on_postgres = conn.dialect.name == "postgresql"
        for prepared in (IN_IDS, NOT_IN_IDS, NAMED, TWO_LISTS):
            plan = prepared.plan(conn.dialect)
            assert (not plan.expanding) == on_postgres
            assert ("ANY(" in plan.sql or "ALL(" in plan.sql) == on_postgres
        assert [r.name for r in await conn.execute(IN_IDS, {"ids": ids, "not_named": "bo"})] == ["ana", "cy"]
        assert [r.name for r in await conn.execute(NOT_IN_IDS, {"ids": []})] == ["ana", "bo", "cy"]
        two = {"ids": ids[:1], "names": ["cy"], "not_named": "ana"}  # ana: in the list, yet named
        assert [r.name for r in await conn.execute(TWO_LISTS, two)] == ["cy"]


async def test_prepared_writes_returning_executemany_and_rowcount(runtime: Runtime, admin: Caller) -> None:
    services = runtime.services
    for name in ("ana", "bo", "cy"):
        await services.agents.register(admin, name=name)
    now = runtime.services.ctx.clock()
    async with runtime.db.write() as conn:
        project_id = (await conn.execute(sa.select(projects.c.id))).scalar_one()
        ids = list((await conn.execute(sa.select(agents.c.id).order_by(agents.c.id))).scalars())
        row = {
            "project_id": project_id,
            "sender": "ana",
            "subject": "s",
            "body": "b",
            "thread_id": "t-1",
            "importance": "high",
            "ack_required": True,
            "to_role": None,
            "broadcast": False,
            "created_at": now,
            "recipient_names": "ana,bo,cy",
        }
        first = (await conn.execute(INSERT, row)).scalar_one()
        second = (await conn.execute(INSERT, {**row, "subject": "s2"})).scalar_one()
        assert second == first + 1
        await conn.execute(INSERT_RECIPIENT, [{"message_id": first, "agent_id": a} for a in ids])
        assert (await conn.execute(MARK_READ, {"mid": first, "now": now})).rowcount == 3
        assert (await conn.execute(MARK_READ, {"mid": first, "now": now})).rowcount == 0
        stored = (await conn.execute(sa.select(messages).where(messages.c.id == first))).one()
        assert (stored.subject, stored.ack_required, stored.broadcast) == ("s", True, False)
        assert stored.to_role is None
        assert stored.created_at == now
        read = (
            await conn.execute(
                sa.select(message_recipients.c.read_at).where(message_recipients.c.message_id == first)
            )
        ).scalars()
        assert set(read) == {now}
