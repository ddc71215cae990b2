"""Mail between agents: stored before it is acknowledged to the sender."""

from __future__ import annotations

import secrets

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.errors import InvalidInput, NotFound
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Agent, Inbox, Message
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service, Transaction, new_event
from vibe_ensemble.services.issues import actor_name
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import messages as store
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.events import NewEvent

MAX_RECIPIENTS = 200
MAX_IDS = 500


class MessageService(Service):
    async def send(
        self,
        caller: Caller,
        *,
        subject: str,
        body: str,
        project: str | None = None,
        agent: str | None = None,
        to: list[str] | None = None,
        to_role: AgentRole | None = None,
        broadcast: bool = False,
        thread_id: str | None = None,
        importance: Importance = Importance.NORMAL,
        ack_required: bool = False,
        overseer: bool = False,
    ) -> Message:
        """Deliver to named agents, to every agent of a role, or to everyone (never back to the sender).

        `overseer`: a person steering the agents from the dashboard; the message is also written to
        the audit log (`message.overseer`), in the same transaction.
        """
        caller.require(Op.MESSAGE_SEND)
        sender = actor_name(caller, agent)
        subject = rules.line("subject", subject, max_len=rules.MAX_TITLE)
        body = rules.text("body", body, max_len=rules.MAX_BODY)
        rules.count("to", to or [], MAX_RECIPIENTS, "recipients")  # as given, before de-duplicating
        for i, name in enumerate(to or []):
            rules.text(f"to[{i}]", name, max_len=rules.MAX_NAME, required=False)  # names, not essays
        to = list(dict.fromkeys(to or []))
        if not to and to_role is None and not broadcast:
            raise InvalidInput("to", "name at least one recipient, or give to_role, or set broadcast")
        if thread_id is not None:
            thread_id = rules.line("thread_id", thread_id, max_len=rules.MAX_LINE)
        # On PostgreSQL the message, its recipients and its event are one statement, committed by
        # itself (no BEGIN and COMMIT: three round trips fewer); an overseer's also writes its audit.
        alone = not self.ctx.db.is_sqlite and not overseer
        async with self.write(one_statement=alone) as tx:
            proj = await self.project(tx.conn, caller, project)
            # The sender (as `check_actor` would) and the named recipients, in one statement at most.
            acting = caller.acts_as_agent(agent)
            found = await self.named_agents(tx.conn, proj.id, [sender, *to] if acting else to)
            if acting:
                self.acts_as(caller, proj.id, agent_store.registered(found.get(sender), sender))
            recipients = await _recipients(
                tx.conn, proj.id, sender, to, found, None if broadcast else to_role, broadcast
            )
            thread_id = thread_id or f"t-{secrets.token_hex(6)}"
            message = Message(
                id=0,  # given below
                project=proj.slug,
                sender=sender,
                recipients=sorted(recipients.values()),
                to_role=to_role,
                broadcast=broadcast,
                subject=subject,
                body=body,
                thread_id=thread_id,
                importance=importance,
                ack_required=ack_required,
                created_at=tx.now,
            )
            announced = _sent(proj.id, message) if alone else None
            message.id = await store.insert(tx.conn, proj.id, message, list(recipients), announced=announced)
            if alone:
                tx.events_to_order = True  # the statement wrote the event, to be given its id
            else:
                _announce(tx, caller, proj.id, message, overseer=overseer)
        return message

    async def fetch_inbox(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        unread_only: bool = False,
        since_id: int = 0,
        limit: int = 50,
        mark_read: bool = False,
    ) -> Inbox:
        """The caller's mail after `since_id`, oldest first (newest last). Marks read only when asked."""
        caller.require(Op.MESSAGE_READ)
        name = caller.acting_agent(agent)
        limit = rules.limit("limit", limit)
        if since_id < 0:
            raise InvalidInput("since_id", "must be 0 or a message id")
        async with self.write() if mark_read else self.read() as tx:
            conn = tx.conn
            proj = await self.project(conn, caller, project)
            # a team token names the agent: one it may act as (a bound token's is checked no more)
            me = None if caller.agent is not None else await self.acting_as(conn, proj.id, caller, name)
            page = await store.inbox_page(
                conn, proj.id, name, since_id=since_id, unread_only=unread_only, limit=limit + 1
            )
            if page is None:  # nothing to read, or no such agent: the lookup says which
                me = me or await self.acting_as(conn, proj.id, caller, name)
                return Inbox(items=[], unread=await store.unread_count(conn, me.id), next_since_id=None)
            items, me_id, unread = page
            more = len(items) > limit
            items = items[:limit]
            if mark_read:
                ids = [i.message.id for i in items if i.read_at is None]
                if ids:
                    unread -= await store.mark_read(conn, me_id, ids, tx.now)
                    tx.emit(EventType.MESSAGE_READ, name, proj.id, agent=name, ids=ids)
                    for item in items:
                        if item.read_at is None:
                            item.read_at = tx.now
        return Inbox(items=items, unread=unread, next_since_id=items[-1].message.id if more else None)

    async def mark_read(
        self, caller: Caller, ids: list[int], *, project: str | None = None, agent: str | None = None
    ) -> list[int]:
        return await self._set_state(caller, ids, project=project, agent=agent, acknowledge=False)

    async def acknowledge(
        self, caller: Caller, ids: list[int], *, project: str | None = None, agent: str | None = None
    ) -> list[int]:
        """Acknowledge messages (which also marks them read)."""
        return await self._set_state(caller, ids, project=project, agent=agent, acknowledge=True)

    async def _set_state(
        self, caller: Caller, ids: list[int], *, project: str | None, agent: str | None, acknowledge: bool
    ) -> list[int]:
        caller.require(Op.MESSAGE_READ)
        name = caller.acting_agent(agent)
        rules.count("ids", ids, MAX_IDS, "ids")  # as given, before de-duplicating
        ids = sorted(set(ids))
        if not ids:
            raise InvalidInput("ids", "give at least one message id")
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            me = await self.acting_as(tx.conn, proj.id, caller, name)
            missing = set(ids) - await store.received(tx.conn, me.id, ids)
            if missing:
                raise NotFound(f"not in {name}'s inbox: {sorted(missing)}", ids=sorted(missing))
            await store.mark_read(tx.conn, me.id, ids, tx.now)
            if acknowledge:
                await store.mark_acknowledged(tx.conn, me.id, ids, tx.now)
            tx.emit(
                EventType.MESSAGE_ACKNOWLEDGED if acknowledge else EventType.MESSAGE_READ,
                name,
                proj.id,
                agent=name,
                ids=ids,
            )
        return ids


async def _recipients(
    conn: Connection,
    project_id: int,
    sender: str,
    to: list[str],
    found: dict[str, Agent],
    role: AgentRole | None,
    everyone: bool,
) -> dict[int, str]:
    """Ids and names of the named agents (`found`: those of them registered), plus every active
    agent of `role` (or all) but the sender."""
    recipients: dict[int, str] = {}
    for name in to:
        named = found.get(name)
        if named is None or named.retired_at is not None:
            raise InvalidInput("to", f"no active agent named {name!r} in this project", agent=name)
        recipients[named.id] = named.name
    if role is not None or everyone:
        for agent_id, name in await agent_store.active_ids(conn, project_id, role=role):
            if name != sender:
                recipients[agent_id] = name
    if not recipients and role is not None and not everyone:  # acknowledged, then received by nobody
        raise InvalidInput(
            "to_role", f"no active {role.value} in this project (other than the sender) would receive it"
        )
    if not recipients and everyone:
        raise InvalidInput("broadcast", "no other active agent in this project would receive it")
    return recipients


def _sent(project_id: int, message: Message) -> NewEvent:
    """The message's event (`message.sent`)."""
    return new_event(
        EventType.MESSAGE_SENT,
        message.sender,
        project_id,
        id=message.id,
        sender=message.sender,
        recipients=message.recipients,
        subject=message.subject,
        importance=message.importance.value,
        thread_id=message.thread_id,
    )


def _announce(tx: Transaction, caller: Caller, project_id: int, message: Message, *, overseer: bool) -> None:
    """The message's event; a person's message (`overseer`) is also audited, in the same transaction."""
    tx.append(_sent(project_id, message))
    if overseer:
        tx.audit(
            caller,
            "message.overseer",
            project=message.project,
            message_id=message.id,
            recipients=message.recipients,
            to_role=message.to_role.value if message.to_role else None,
            broadcast=message.broadcast,
            subject=message.subject,
            importance=message.importance.value,
        )
