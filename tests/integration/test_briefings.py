"""The briefings' live state as an agent reads it (services/briefings.py rendered by
api/mcp/prompts.py), and the boards' cards: what an issue still waits on, on SQLite and PostgreSQL."""

from __future__ import annotations

from vibe_ensemble.api.mcp.prompts import worker_prompt
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.services import Services


def _section(text: str, heading: str) -> str:
    """The fenced lines under `### heading…` of a briefing."""
    after = text.split(f"### {heading}", 1)[1]
    return after.split("```", 2)[1]


async def test_waits_on_names_only_unfinished_dependencies(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="ann")
    done = await services.issues.create(admin, title="done dep")
    await services.issues.close(admin, done.id, resolution="ok")
    open_dep = await services.issues.create(admin, title="open dep")
    ready = await services.issues.create(admin, title="ready", depends_on=[done.id])
    waiting = await services.issues.create(admin, title="waiting", depends_on=[done.id, open_dep.id])
    marked = await services.issues.create(admin, title="marked", depends_on=[done.id])
    await services.issues.update(admin, marked.id, status=IssueStatus.BLOCKED)
    started = await services.issues.create(admin, title="started", depends_on=[done.id])
    await services.issues.claim(admin, started.id, agent="ann")

    briefing = await services.briefings.assemble(admin, agent="ann")
    text = worker_prompt(briefing, services.ctx.clock(), admin.role)
    ready_lines = _section(text, "Ready to claim")
    assert f"#{ready.id} p2 ready\n" in ready_lines
    assert "waits on" not in ready_lines
    blocked_lines = _section(text, "Blocked or waiting")
    assert f"#{waiting.id} p2 waiting (waits on #{open_dep.id})" in blocked_lines
    assert f"#{marked.id} p2 marked\n" in blocked_lines
    assert "waits on" not in _section(text, "In progress")
    assert f"#{started.id} p2 started\n" in _section(text, "Assigned to you")

    # the boards' cards: every dependency in depends_on, the unfinished ones in waits_on
    for board in (await services.briefings.board(admin), await services.dashboard.board(admin)):
        cards = {c.id: c for column in board.columns.values() for c in column}
        assert cards[waiting.id].depends_on == [done.id, open_dep.id]
        assert cards[waiting.id].waits_on == [open_dep.id]
        assert cards[marked.id].waits_on == [] and cards[ready.id].waits_on == []
        assert cards[started.id].waits_on == []
