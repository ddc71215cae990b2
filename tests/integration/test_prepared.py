"""`Prepared` statements give exactly what SQLAlchemy's own execution gives, on both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store.sqlite import Prepared
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
            assert list(fast.keys()) == list(slow.keys())
            assert fast.all() == slow.all()
        row = (await conn.execute(BY_NAME, {"project_id": project_id, "name": "ana"})).one()
        assert row.capabilities == ["python", "sql"]
        assert row.registered_at.tzinfo is not None
        assert (await conn.execute(COUNT, {"agent_id": bo})).scalar_one() == 3


def test_expanding_in_is_refused() -> None:
    prepared = Prepared(sa.select(agents.c.id).where(agents.c.id.in_(sa.bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="expanding IN"):
        prepared.plan(sa.create_engine("sqlite://").dialect)
