"""The MCP prompts `coordinator_briefing` and `worker_briefing`, and their text.

A briefing is a role prompt followed by the project's live state. Everything in
the live state that agents or people wrote (titles, mail subjects, activities,
lease reasons, knowledge) is untrusted: it is quoted inside fenced blocks, and
the prompt says so, so that nothing written through the server can pass itself
off as the role's instructions.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Literal

from mcp.server import MCPServer

from vibe_ensemble.api.mcp.context import acting, protocol_errors
from vibe_ensemble.domain.enums import AgentRole
from vibe_ensemble.domain.models import Issue, Reservation
from vibe_ensemble.domain.untrusted import UNTRUSTED_NOTE, fence, one_line
from vibe_ensemble.services.briefings import Briefing


def _issue(issue: Issue, *, assignee: bool = False) -> str:
    who = f" @{issue.assignee}" if assignee and issue.assignee else ""
    labels = f" [{', '.join(issue.labels)}]" if issue.labels else ""
    deps = f" (waits on {', '.join(f'#{d}' for d in issue.depends_on)})" if issue.depends_on else ""
    return f"#{issue.id} {issue.priority.value}{who} {one_line(issue.title)}{labels}{deps}"


def _lease(lease: Reservation, now: datetime, *, holder: bool = True) -> str:
    minutes = max(0, int((lease.expires_at - now).total_seconds() // 60))
    kind = "exclusive" if lease.exclusive else "shared"
    who = f"{lease.holder}: " if holder else ""
    reason = f" — {one_line(lease.reason, 80)}" if lease.reason else ""
    issue = f", for #{lease.issue}" if lease.issue is not None else ""
    return f"{who}{lease.pattern} ({kind}, {minutes} min left{issue}){reason}"


def _state(b: Briefing, now: datetime) -> str:
    """The live state, as fenced data under plain headings."""
    counts = ", ".join(f"{status} {n}" for status, n in sorted(b.counts.items())) or "no issues yet"
    team = [
        f"{a.name} ({a.role.value}, {a.status.value})"
        + (f" caps: {', '.join(a.capabilities)}" if a.capabilities else "")
        + (f" — {one_line(a.activity, 80)}" if a.activity else "")
        for a in b.agents
    ]
    parts = [
        f"## Live state of {b.project.slug} at {now:%Y-%m-%d %H:%M} UTC",
        UNTRUSTED_NOTE,
        f"Issues by status: {counts}.",
        f"### Team ({len(b.agents)} active)\n{fence(team)}",
        f"### Ready to claim (best first)\n{fence(_issue(i) for i in b.ready)}",
        f"### In progress\n{fence(_issue(i, assignee=True) for i in b.in_progress)}",
        f"### Blocked or waiting on dependencies\n{fence(_issue(i, assignee=True) for i in b.blocked)}",
    ]
    if b.me is not None:
        parts.append(f"### Assigned to you\n{fence(_issue(i) for i in b.mine)}")
        parts.append(f"### Your leases\n{fence(_lease(r, now, holder=False) for r in b.my_leases)}")
        mail = [
            f"#{m.message.id} from {m.message.sender} [{m.message.importance.value}]"
            f"{' (ack required)' if m.message.ack_required else ''}: {one_line(m.message.subject)}"
            for m in b.mail
        ]
        more = f" (showing {len(mail)})" if b.unread > len(mail) else ""
        parts.append(f"### Your unread mail: {b.unread}{more}\n{fence(mail)}")
    others = [r for r in b.leases if b.me is None or r.holder != b.me.name]
    parts.append(f"### Files and resources others hold\n{fence(_lease(r, now) for r in others[:20])}")
    guidance = [
        f"[{k.kind.value} #{k.id}] {one_line(k.title)}\n  {one_line(k.body, 300)}" for k in b.guidance
    ]
    parts.append(f"### Team guidance (most relevant first)\n{fence(guidance)}")
    return "\n\n".join(parts)


COORDINATOR_ROLE = """\
# Coordinator briefing — {project}

{me} You plan and delegate; you do not
take implementation issues yourself. Your measure of success: every worker is busy
on the most valuable unblocked work, nobody collides with anybody, and what the
team learns is written down where the next agent will find it.

## How to run the team

1. **Take stock.** Read the live state below, then `fetch_inbox` and answer what
   waits on you first: blocked workers cost the most.
2. **Plan in issues.** Turn goals into issues one agent can finish in one sitting
   (`create_issue`): an imperative title, acceptance criteria in the body, a
   priority (p0 only for what blocks others), labels that match the workers'
   capabilities, and `depends_on` only for real ordering constraints. Keep epics
   as parents, not as work.
3. **Delegate.** Let idle workers `claim_issue` the best ready issue, or assign
   one directly (`update_issue` with `assignee`) when a skill matters. Tell the
   worker why in a `send_message` when the issue alone does not say it.
4. **Prevent collisions.** Split parallel work by directory or module so that
   leases do not overlap. `check_paths` shows who holds what; when two issues
   must touch the same files, make one depend on the other.
5. **Unblock.** For every blocked issue decide: answer the question, split the
   issue, re-order dependencies, or reassign. Do not leave a blocker unanswered.
6. **Keep the record.** Record decisions (`add_knowledge` kind `decision`) and
   conventions (kind `guideline`) as soon as they are made; link them to issues.
7. **Stay present.** `heartbeat` every few minutes; use `wait_for_messages`
   rather than polling. Review issues in `review` and close what is done with a
   resolution.
"""

WORKER_ROLE = """\
# Worker briefing — {project}

You are {me}, a worker on this project. You take one issue at a time from claim to
close, keep your teammates informed, and never edit files someone else holds.

## Your loop

1. **Check in.** `heartbeat` (it returns your mail, your issues and ready work);
   read and act on urgent mail first; acknowledge mail that asks for it.
2. **Claim.** Finish what is assigned to you before anything new; otherwise
   `claim_issue` (without an id it picks the best ready issue for your
   capabilities). Never work on an issue you have not claimed.
3. **Lease before you edit.** `reserve_paths` the files or directories you will
   change (e.g. `src/api/**`), exclusive, naming your issue (`issue`: its id) and
   with a TTL that covers your work. If a path conflicts, do not edit it: take other work,
   or message the holder and wait. Renew long leases by reserving again.
4. **Work in the open.** `heartbeat` with status `working` and a one-line
   activity; `comment_issue` when you learn something or change course. Search
   the team's knowledge (`search_knowledge`) before solving a problem twice.
5. **Finish properly.** Run the tests, commit, `close_issue` with a resolution
   that says what changed, `release_paths`, and `add_knowledge` for anything the
   next agent should know (a pattern, a pitfall, a decision you had to make).
6. **When stuck**, say so early: `update_issue` to status `blocked`, a comment
   with the exact question, and a message to the coordinator.
"""


def coordinator_prompt(b: Briefing, now: datetime) -> str:
    if b.me is None:
        me = "You are the coordinator of this project."
    elif b.me.role == AgentRole.COORDINATOR:
        me = f"You are {b.me.name}, the coordinator of this project."
    else:  # told what it is, not that it leads: a worker reading how the team is led
        me = (
            f"You are {b.me.name}, registered as a {b.me.role.value}, reading the coordinator's briefing "
            "(yours is `worker_briefing`): below, *you* is this project's coordinator."
        )
    return COORDINATOR_ROLE.format(project=b.project.slug, me=me) + "\n" + _state(b, now)


def worker_prompt(b: Briefing, now: datetime) -> str:
    me = b.me.name if b.me else "a worker"
    return WORKER_ROLE.format(project=b.project.slug, me=me) + "\n" + _state(b, now)


async def _render(role: Literal["coordinator", "worker"], agent: str | None, project: str | None) -> str:
    services, caller = acting()
    briefing = await services.briefings.assemble(caller, project=project, agent=agent or None)
    now = services.ctx.clock()
    return coordinator_prompt(briefing, now) if role == "coordinator" else worker_prompt(briefing, now)


async def coordinator_briefing(agent: str | None = None, project: str | None = None) -> str:
    """How to plan and delegate, with the project's live state: team, ready and blocked work, leases,
    your mail and the most relevant guidelines. `agent`: your name, for a team token."""
    return await _render("coordinator", agent, project)


async def worker_briefing(agent: str | None = None, project: str | None = None) -> str:
    """How to claim, lease, work and report, with the project's live state: your issues, your
    leases, your mail and the most relevant guidelines. `agent`: your name, for a team token."""
    return await _render("worker", agent, project)


PROMPTS = ((coordinator_briefing, "Coordinator briefing"), (worker_briefing, "Worker briefing"))
NAMES = tuple(fn.__name__ for fn, _ in PROMPTS)
ARGUMENTS = {fn.__name__: tuple(inspect.signature(fn).parameters) for fn, _ in PROMPTS}  # by prompt


def register(mcp: MCPServer) -> None:
    """Add the briefing prompts to `mcp`."""
    for fn, title in PROMPTS:
        description = inspect.cleandoc(fn.__doc__ or "")  # the docstring without its indentation
        mcp.prompt(title=title, description=description)(protocol_errors(fn))
