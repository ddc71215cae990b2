"""The briefing text: untrusted content stays inside fences it cannot close; its first sentence says
who reads it, for every caller and agent role."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vibe_ensemble.api.mcp.prompts import coordinator_prompt, worker_prompt
from vibe_ensemble.api.mcp.server import instructions
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, TokenRole
from vibe_ensemble.domain.models import Agent, Project
from vibe_ensemble.domain.untrusted import fence, one_line
from vibe_ensemble.services.briefings import Briefing


def test_fence_outgrows_the_backticks_inside() -> None:
    assert fence(["plain"]) == "```text\nplain\n```"
    assert fence(["a ``` b", "c"]) == "````text\na ``` b\nc\n````"
    assert fence([]) == "```text\n(none)\n```"


@given(st.lists(st.text(alphabet=st.sampled_from("`a \n#"), max_size=30), max_size=5))
def test_no_line_inside_can_close_the_fence(lines: list[str]) -> None:
    block = fence(one_line(line) for line in lines)
    opening, *inside, closing = block.split("\n")
    marker = opening.removesuffix("text")
    assert closing == marker and set(marker) == {"`"}
    assert not any(line.strip().startswith(marker) for line in inside)


def test_one_line_collapses_and_cuts() -> None:
    assert one_line("a\n\n# b\tc") == "a # b c"
    assert one_line("x" * 200, 10) == "x" * 9 + "…"


NOW = datetime(2030, 1, 31, 12, tzinfo=UTC)


def _briefing(me: AgentRole | None) -> Briefing:
    project = Project(id=1, slug="default", name="Default", description="", repo="", created_at=NOW)
    agent = None
    if me is not None:
        agent = Agent(
            id=1, project="default", name="ann", role=me, status=AgentStatus.IDLE, capabilities=[],
            program="", model="", description="", activity="", registered_at=NOW, last_seen=NOW,
        )  # fmt: skip
    return Briefing(
        project=project, me=agent, agents=[], ready=[], in_progress=[], blocked=[], mine=[], waits_on={},
        my_leases=[], leases=[], unread=0, mail=[], guidance=[],
    )  # fmt: skip


# Who reads the briefing, by the prompt's role and the acting agent's (None: no agent).
WHO = {
    (AgentRole.WORKER, None): "You are a worker on this project.",
    (AgentRole.WORKER, AgentRole.WORKER): "You are ann, a worker on this project.",
    (AgentRole.WORKER, AgentRole.COORDINATOR): (
        "You are ann, registered as a coordinator, reading a worker's briefing (yours is "
        "`coordinator_briefing`): below, *you* is a worker on this project."
    ),
    (AgentRole.WORKER, AgentRole.OBSERVER): (
        "You are ann, registered as an observer, reading a worker's briefing: below, *you* is a worker "
        "on this project."
    ),
    (AgentRole.COORDINATOR, None): "You are the coordinator of this project.",
    (AgentRole.COORDINATOR, AgentRole.COORDINATOR): "You are ann, the coordinator of this project.",
    (AgentRole.COORDINATOR, AgentRole.WORKER): (
        "You are ann, registered as a worker, reading the coordinator's briefing (yours is "
        "`worker_briefing`): below, *you* is the coordinator of this project."
    ),
    (AgentRole.COORDINATOR, AgentRole.OBSERVER): (
        "You are ann, registered as an observer, reading the coordinator's briefing: below, *you* is the "
        "coordinator of this project."
    ),
}
# What a token of each role is told it may not do, by the prompt's role ("": nothing).
TOKEN = {
    (AgentRole.WORKER, TokenRole.ADMIN): "",
    (AgentRole.WORKER, TokenRole.COORDINATOR): "",
    (AgentRole.WORKER, TokenRole.WORKER): "",
    (AgentRole.WORKER, TokenRole.VIEWER): (
        " This briefing was asked for with a viewer token, which may not claim, comment on or close "
        "issues, reserve paths or send mail: the steps below are for an agent whose token may."
    ),
    (AgentRole.COORDINATOR, TokenRole.ADMIN): "",
    (AgentRole.COORDINATOR, TokenRole.COORDINATOR): "",
    (AgentRole.COORDINATOR, TokenRole.WORKER): (
        " This briefing was asked for with a worker token, which may not assign issues to others: the "
        "steps below are for an agent whose token may."
    ),
    (AgentRole.COORDINATOR, TokenRole.VIEWER): (
        " This briefing was asked for with a viewer token, which may not create or change issues, assign "
        "issues to others or send mail: the steps below are for an agent whose token may."
    ),
}
PROMPT = {
    AgentRole.WORKER: (worker_prompt, "You take one issue"),
    AgentRole.COORDINATOR: (coordinator_prompt, "You plan"),
}


@pytest.mark.parametrize("caller", list(TokenRole))
@pytest.mark.parametrize("me", [None, *AgentRole])
@pytest.mark.parametrize("role", [AgentRole.WORKER, AgentRole.COORDINATOR])
def test_the_briefing_says_once_who_reads_it_for_every_role(
    role: AgentRole, me: AgentRole | None, caller: TokenRole
) -> None:
    """Every caller (admin, coordinator, worker, viewer token), as no agent or as an agent of each
    role, reading either briefing: one sentence says who it is, without repeating the role."""
    render, after = PROMPT[role]
    text = render(_briefing(me), NOW, caller)
    opening = " ".join(text.split("\n\n")[1].split())  # the paragraph under the heading, unwrapped
    assert opening.startswith(WHO[role, me] + TOKEN[role, caller] + " " + after), opening
    assert "a worker, a worker" not in opening and "a observer" not in opening
    you = {
        AgentRole.WORKER: "a worker on this project",
        AgentRole.COORDINATOR: "the coordinator of this project",
    }
    assert opening.count(you[role]) == 1


def test_the_guidance_states_the_real_presence_window() -> None:
    """The server's instructions and both briefings say how long an agent may go without a call
    (VIBE_OFFLINE_AFTER_S, as configured), that any call keeps it present, and never "heartbeat
    every few minutes" (which outlasts the default two-minute window)."""
    assert "after 2 minutes" in " ".join(instructions(120).split())
    assert "after 90 seconds" in " ".join(instructions(90).split())
    briefing = replace(_briefing(AgentRole.WORKER), offline_after_s=90)
    for prompt in (worker_prompt, coordinator_prompt):
        text = " ".join(prompt(briefing, NOW, TokenRole.WORKER).split())
        assert "Every call you make keeps you present; after 90 seconds without one" in text
        assert "wait_for_messages" in text
    for text in (instructions(120), worker_prompt(_briefing(None), NOW, TokenRole.WORKER)):
        assert "few minutes" not in text
