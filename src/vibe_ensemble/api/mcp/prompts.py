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
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.domain.models import Issue, Reservation
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.domain.untrusted import UNTRUSTED_NOTE, fence, one_line
from vibe_ensemble.services.briefings import Briefing


def _issue(issue: Issue, waits_on: dict[int, list[int]], *, assignee: bool = False) -> str:
    """One issue's line; "waits on" names its unfinished dependencies only (`waits_on`), never the
    finished ones (a ready issue waits on nothing)."""
    who = f" @{issue.assignee}" if assignee and issue.assignee else ""
    labels = f" [{', '.join(issue.labels)}]" if issue.labels else ""
    waiting = waits_on.get(issue.id)
    deps = f" (waits on {', '.join(f'#{d}' for d in waiting)})" if waiting else ""
    return f"#{issue.id} {issue.priority.value}{who} {one_line(issue.title)}{labels}{deps}"


def _lease(lease: Reservation, now: datetime, *, holder: bool = True) -> str:
    minutes = max(0, int((lease.expires_at - now).total_seconds() // 60))
    kind = "exclusive" if lease.exclusive else "shared"
    who = f"{lease.holder}: " if holder else ""
    reason = f" — {one_line(lease.reason, 80)}" if lease.reason else ""
    issue = f", for #{lease.issue}" if lease.issue is not None else ""
    return f"{who}{lease.pattern} ({kind}, {minutes} min left{issue}){reason}"


def _state(b: Briefing, now: datetime, caller_role: TokenRole) -> str:
    """The live state, as fenced data under plain headings."""
    counts = ", ".join(f"{status} {n}" for status, n in sorted(b.counts.items())) or "no issues yet"
    team = [
        f"{a.name} ({a.role.value}, {a.status.value})"
        + (f" caps: {', '.join(a.capabilities)}" if a.capabilities else "")
        + (f" — {one_line(a.activity, 80)}" if a.activity else "")
        for a in b.agents
    ]

    def issues(listed: list[Issue], *, assignee: bool = False) -> str:
        return fence(_issue(i, b.waits_on, assignee=assignee) for i in listed)

    parts = [
        f"## Live state of {b.project.slug} at {now:%Y-%m-%d %H:%M} UTC",
        UNTRUSTED_NOTE,
        f"Issues by status: {counts}.",
        f"### Team ({len(b.agents)} active)\n{fence(team)}",
        f"### Ready to claim (best first)\n{issues(b.ready)}",
        f"### In progress\n{issues(b.in_progress, assignee=True)}",
        f"### Blocked or waiting on dependencies\n{issues(b.blocked, assignee=True)}",
    ]
    if b.me is not None:
        parts.append(f"### Assigned to you\n{issues(b.mine)}")
        parts.append(f"### Your leases\n{fence(_lease(r, now, holder=False) for r in b.my_leases)}")
        mail = [
            f"#{m.message.id} from {m.message.sender} [{m.message.importance.value}]"
            f"{' (ack required)' if m.message.ack_required else ''}: {one_line(m.message.subject)}"
            for m in b.mail
        ]
        if b.unread is None:  # never a count the token cannot know: "0" would be a false statement
            parts.append(
                f"### Your unread mail: not visible with this token "
                f"({_a(caller_role.value)} token may not read mail)"
            )
        else:
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
7. **Stay present.** Every call you make keeps you present; after {window}
   without one you show as offline (your next call brings you back). Wait for
   mail with `wait_for_messages` (present while it waits) rather than polling or
   going quiet, and `heartbeat` when your status or activity changes. Review
   issues in `review` and close what is done with a resolution.
"""

WORKER_ROLE = """\
# Worker briefing — {project}

{me} You take one issue at a time from claim to
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
7. **Stay present.** Every call you make keeps you present; after {window}
   without one you show as offline to the team. Between tasks, or while you
   wait for an answer, `wait_for_messages` (present while it waits).
"""


# What each briefing's reader is, as the role prompt addresses it ("below, *you* is …").
_YOU = {
    AgentRole.COORDINATOR: "the coordinator of this project",
    AgentRole.WORKER: "a worker on this project",
}
_WHOSE = {AgentRole.COORDINATOR: "the coordinator's briefing", AgentRole.WORKER: "a worker's briefing"}
_OWN = {AgentRole.COORDINATOR: "coordinator_briefing", AgentRole.WORKER: "worker_briefing"}
# What the role's steps need a token to do, and how a person would say it.
_NEEDS = {
    AgentRole.COORDINATOR: (
        (Op.ISSUE_WRITE, "create or change issues"),
        (Op.ISSUE_ASSIGN_OTHERS, "assign issues to others"),
        (Op.MESSAGE_SEND, "send mail"),
    ),
    AgentRole.WORKER: (
        (Op.ISSUE_WRITE, "claim, comment on or close issues"),
        (Op.RESERVATION_WRITE, "reserve paths"),
        (Op.MESSAGE_SEND, "send mail"),
    ),
}


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def you_are(role: AgentRole, b: Briefing, caller_role: TokenRole) -> str:
    """The briefing's first sentence: who reads it. The acting agent by its name when there is one
    (and, when it is registered in another role, that role and whose briefing this is), else the
    role itself; then, when the caller's token may not do what the steps ask, what it may not do."""
    if b.me is None:
        me = f"You are {_YOU[role]}."
    elif b.me.role == role:
        me = f"You are {b.me.name}, {_YOU[role]}."
    else:  # told what it is, not that it is what it reads: e.g. a worker reading how the team is led
        own = f" (yours is `{_OWN[b.me.role]}`)" if b.me.role in _OWN else ""
        me = (
            f"You are {b.me.name}, registered as {_a(b.me.role.value)}, reading {_WHOSE[role]}{own}: "
            f"below, *you* is {_YOU[role]}."
        )
    missing = [says for op, says in _NEEDS[role] if not allowed(caller_role, op)]
    if missing:
        me += (
            f" This briefing was asked for with {_a(caller_role.value)} token, which may not {_or(missing)}: "
            "the steps below are for an agent whose token may."
        )
    return me


def coordinator_prompt(b: Briefing, now: datetime, caller_role: TokenRole) -> str:
    me = you_are(AgentRole.COORDINATOR, b, caller_role)
    window = rules.duration(b.offline_after_s)
    return (
        COORDINATOR_ROLE.format(project=b.project.slug, me=me, window=window)
        + "\n"
        + _state(b, now, caller_role)
    )


def worker_prompt(b: Briefing, now: datetime, caller_role: TokenRole) -> str:
    me = you_are(AgentRole.WORKER, b, caller_role)
    window = rules.duration(b.offline_after_s)
    return (
        WORKER_ROLE.format(project=b.project.slug, me=me, window=window) + "\n" + _state(b, now, caller_role)
    )


async def _render(role: Literal["coordinator", "worker"], agent: str | None, project: str | None) -> str:
    services, caller = acting()
    briefing = await services.briefings.assemble(caller, project=project, agent=agent or None)
    now = services.ctx.clock()
    prompt = coordinator_prompt if role == "coordinator" else worker_prompt
    return prompt(briefing, now, caller.role)


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
