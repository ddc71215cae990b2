"""Pages whose cost grows with the page, not the table: SQLite's plan for the server's own
statements reads them in the order asked for (no sort of every row first)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import issues as issue_store


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_ready_page_walks_an_index_in_its_order(runtime: Runtime) -> None:
    def plan(conn: sa.Connection) -> list[str]:
        return issue_store._READY_IN.explain(conn, {"project_id": 1, "limit": 50})

    steps = await runtime.db.run_sync(plan, write=False)
    assert any("ix_issues_project_id_status_priority_id" in step for step in steps), steps
    assert not any("TEMP B-TREE" in step for step in steps), steps
