"""What a database statement's span is named and carries: read off the statement, never its SQL."""

from __future__ import annotations

import sqlalchemy as sa

from vibe_ensemble.store import traced
from vibe_ensemble.store.prepared import Prepared
from vibe_ensemble.store.tables import agents, issues


def test_each_kind_of_statement_gives_its_operation_and_its_one_table() -> None:
    secret = "row-value-5e1f"
    assert traced.describe(sa.select(issues.c.id).where(issues.c.title == secret)) == ("SELECT", "issues")
    assert traced.describe(sa.insert(agents).values(name=secret)) == ("INSERT", "agents")
    assert traced.describe(sa.update(issues).values(title=secret)) == ("UPDATE", "issues")
    assert traced.describe(sa.delete(agents).where(agents.c.name == secret)) == ("DELETE", "agents")
    # more than one table: the operation only
    joined = sa.select(issues.c.id).join(agents, agents.c.id == issues.c.assignee_id)
    assert traced.describe(joined) == ("SELECT", None)
    union = sa.union(sa.select(issues.c.id), sa.select(agents.c.id))
    assert traced.describe(union) == ("SELECT", None)
    # our own SQL text: its first word when it is a known operation, nothing else of it
    assert traced.describe(sa.text("SELECT pg_advisory_xact_lock(:c, :p)")) == ("SELECT", None)
    assert traced.describe(sa.text(f"CREATE VIRTUAL TABLE {secret} USING fts5(x)")) == (None, None)


def test_a_prepared_statement_is_described_once() -> None:
    prepared = Prepared(sa.select(issues.c.id).where(issues.c.id == sa.bindparam("id")))
    first = traced.describe(prepared)
    assert first == ("SELECT", "issues")
    assert traced.describe(prepared) is first


def test_a_select_of_what_a_with_inserted_is_named_by_the_insert() -> None:
    from vibe_ensemble.store.messages import _INSERT_DELIVERED  # a message and its recipients

    assert traced.describe(_INSERT_DELIVERED) == ("INSERT", "messages")
