"""Mail for the people overseeing a project: conversations, their messages with each recipient's
read and acknowledged state, and a search. Who may read bodies is the `message.oversee`
operation (coordinator and admin tokens); everyone who may read events (every role) sees the rest —
who wrote to whom, when, about what, and who has read or acknowledged it — which the event log
already tells them."""

from __future__ import annotations

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import Importance
from vibe_ensemble.domain.errors import InvalidInput, NotFound
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.domain.threads import MailHit, Thread, ThreadSummary
from vibe_ensemble.services.base import Service
from vibe_ensemble.services.knowledge import query_terms
from vibe_ensemble.store import mail_search
from vibe_ensemble.store import threads as store

THREAD_MESSAGES = 200  # the newest messages of a thread shown on its page
MAX_QUERY = 500


class ThreadService(Service):
    def bodies(self, caller: Caller) -> bool:
        """Whether this caller is shown message bodies."""
        return allowed(caller.role, Op.MESSAGE_OVERSEE)

    async def threads(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        importance: Importance | None = None,
        unacked: bool = False,
        limit: int = 50,
    ) -> list[ThreadSummary]:
        """Threads with a message matching every filter, most recent activity first: `agent` sent or
        received it, it is of `importance`, it still waits for an acknowledgement."""
        caller.require(Op.EVENT_READ)
        limit = rules.limit("limit", limit)
        if agent is not None:
            agent = rules.text("agent", agent, max_len=rules.MAX_NAME)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            return await store.newest_threads(
                tx.conn, proj.id, agent=agent, importance=importance, unacked=unacked, limit=limit
            )

    async def thread(self, caller: Caller, thread_id: str, *, project: str | None = None) -> Thread:
        """One conversation, oldest message first; bodies only for `message.oversee`."""
        caller.require(Op.EVENT_READ)
        thread_id = rules.line("thread", thread_id, max_len=rules.MAX_LINE)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            found, more = await store.thread_messages(tx.conn, proj.id, thread_id, limit=THREAD_MESSAGES)
        if not found:
            raise NotFound(f"thread {thread_id!r} has no messages in this project", thread=thread_id)
        bodies = self.bodies(caller)
        if not bodies:
            for message in found:
                message.body = None
        return Thread(proj.slug, thread_id, found, bodies, more)

    async def search(
        self, caller: Caller, query: str, *, project: str | None = None, limit: int = 20
    ) -> list[MailHit]:
        """The messages that best match any word of `query` (ranked full-text search of this
        project's mail): in their subject — or subject and body, for callers who may read bodies —
        with a snippet of the body, matches marked « », for those callers."""
        caller.require(Op.EVENT_READ)
        if len(query) > MAX_QUERY:
            raise InvalidInput("q", f"must be at most {MAX_QUERY} characters (got {len(query)})")
        limit = rules.limit("limit", limit)
        words = query_terms("q", query)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            return await mail_search.search(tx.conn, proj.id, words, bodies=self.bodies(caller), limit=limit)
