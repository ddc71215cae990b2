"""MCP tools for mail: send, read, mark read, acknowledge, wait."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vibe_ensemble.api.held import while_connected
from vibe_ensemble.api.mcp.context import acting, bound
from vibe_ensemble.api.mcp.params import AgentArg, AgentName, MessageIds, ProjectArg, items, text
from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.models import Inbox, Message
from vibe_ensemble.domain.rules import MAX_BODY, MAX_ID, MAX_LINE, MAX_LIST_LIMIT, MAX_TITLE
from vibe_ensemble.services.live import MAX_WAIT_S
from vibe_ensemble.services.messages import MAX_RECIPIENTS


async def send_message(
    subject: Annotated[str, text("One line.", MAX_TITLE)],
    body: Annotated[str, text("Markdown.", MAX_BODY)],
    to: Annotated[list[AgentName] | None, items("Agent names.", MAX_RECIPIENTS)] = None,
    to_role: Annotated[AgentRole | None, Field(description="Every active agent of this role.")] = None,
    broadcast: Annotated[bool, Field(description="Every active agent in the project.")] = False,
    thread_id: Annotated[str | None, text("Reply in this thread.", MAX_LINE)] = None,
    importance: Annotated[Importance, Field(description="low, normal, high or urgent.")] = (
        Importance.NORMAL
    ),
    ack_required: Annotated[bool, Field(description="Ask recipients to acknowledge.")] = False,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Message:
    """Tell teammates something: to agents, a role, or everyone. Stored before this returns."""
    services, caller = acting()
    return await services.messages.send(
        caller,
        project=project,
        agent=agent,
        subject=subject,
        body=body,
        to=to,
        to_role=to_role,
        broadcast=broadcast,
        thread_id=thread_id,
        importance=importance,
        ack_required=ack_required,
    )


async def fetch_inbox(
    unread_only: Annotated[bool, Field(description="Only mail you have not read.")] = False,
    since_id: Annotated[int, Field(ge=0, le=MAX_ID, description="Only messages with a larger id.")] = 0,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT, description="Page size.")] = 50,
    mark_read: Annotated[bool, Field(description="Mark the returned messages read.")] = False,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Inbox:
    """Your mail, oldest first (newest last). Does not mark anything read unless mark_read is true."""
    services, caller = acting()
    return await services.messages.fetch_inbox(
        caller,
        project=project,
        agent=agent,
        unread_only=unread_only,
        since_id=since_id,
        limit=limit,
        mark_read=mark_read,
    )


async def mark_read(ids: MessageIds, agent: AgentArg = None, project: ProjectArg = None) -> list[int]:
    """After reading mail fetched without mark_read, mark it read."""
    services, caller = acting()
    return await services.messages.mark_read(caller, ids, project=project, agent=agent)


async def acknowledge_messages(
    ids: MessageIds, agent: AgentArg = None, project: ProjectArg = None
) -> list[int]:
    """Confirm you got mail that asks for it (ack_required); also marks it read."""
    services, caller = acting()
    return await services.messages.acknowledge(caller, ids, project=project, agent=agent)


async def wait_for_messages(
    timeout_s: Annotated[
        float,
        Field(
            ge=0,
            le=int(MAX_WAIT_S),
            allow_inf_nan=False,
            description="Give up after this many seconds (at most 60).",
        ),
    ] = 30,
    since_id: Annotated[int, Field(ge=0, le=MAX_ID, description="Only messages with a larger id.")] = 0,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT, description="At most this many messages.")] = 50,
    mark_read: Annotated[bool, Field(description="Mark the returned messages read.")] = False,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Inbox:
    """Wait for mail instead of polling fetch_inbox.

    Returns your unread mail as soon as there is any (sent through any server), or empty at the timeout.
    You stay present while it waits.
    """
    services, caller = acting()
    wait = services.live.wait_for_messages(
        caller,
        project=project,
        agent=agent,
        timeout_s=timeout_s,
        since_id=since_id,
        limit=limit,
        mark_read=mark_read,
    )
    call = bound()
    # A client gone ends the wait (and gives its held-wait slot back) at once; nobody reads the answer.
    gone = Inbox(items=[], unread=0, next_since_id=None)
    return await while_connected(call.receive if call else None, wait, gone)


TOOLS = (
    send_message,
    fetch_inbox,
    mark_read,
    acknowledge_messages,
    wait_for_messages,
)
