"""The briefings' live state as an agent reads it (services/briefings.py rendered by
api/mcp/prompts.py), and the boards' cards: what an issue still waits on, on SQLite and PostgreSQL."""

from __future__ import annotations

from vibe_ensemble.api.mcp.prompts import worker_prompt
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus, TokenRole
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


async def test_mail_the_token_may_not_read_is_not_visible_rather_than_none(
    services: Services, admin: Caller
) -> None:
    """A viewer token reading alice's briefing may not read her mail: the briefing says so, never
    "0 (none)" while she has unread mail. A token that may read it sees the count and the mail."""
    viewer = Caller(credential_id=7, role=TokenRole.VIEWER, project="default", label="wall")
    await services.agents.register(admin, name="alice")
    await services.agents.register(admin, name="bob")
    for i in range(3):
        await services.messages.send(admin, agent="bob", to=["alice"], subject=f"note {i}", body="b")

    seen = await services.briefings.assemble(viewer, agent="alice")
    assert seen.unread is None and seen.mail == []
    text = worker_prompt(seen, services.ctx.clock(), viewer.role)
    assert "### Your unread mail: not visible with this token (a viewer token may not read mail)" in text
    assert "unread mail: 0" not in text and "note 0" not in text

    own = await services.briefings.assemble(admin, agent="alice")
    text = worker_prompt(own, services.ctx.clock(), admin.role)
    assert "### Your unread mail: 3\n" in text and "note 2" in text
