"""Issues: the tracker, with dependencies and atomic claims."""

from __future__ import annotations

import builtins
from typing import Any

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentStatus, IssueStatus, Priority
from vibe_ensemble.domain.errors import Conflict, InvalidInput, NotFound, VersionConflict
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import ClosedIssue, Comment, Issue, IssueDetail, IssuePage
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services import claims
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import comments as comment_store
from vibe_ensemble.store import dependencies as dependency_store
from vibe_ensemble.store import issues as store
from vibe_ensemble.store import locks
from vibe_ensemble.store.database import Connection

# Marks "argument not given" where None is a meaningful value (unassign, no parent).
UNSET: Any = object()


def actor_name(caller: Caller, agent: str | None) -> str:
    """Who a change is recorded as: the acting agent if there is one, else the token."""
    if caller.acts_as_agent(agent):
        return caller.acting_agent(agent)
    return caller.display


def _check_deps(field: str, values: list[int] | None) -> list[int]:
    if values is None:
        return []
    rules.count(field, values, rules.MAX_DEPENDENCIES, "dependencies")
    return sorted(set(values))


class IssueService(Service):
    async def create(
        self,
        caller: Caller,
        *,
        title: str,
        project: str | None = None,
        agent: str | None = None,
        body: str = "",
        priority: Priority = Priority.P2,
        labels: list[str] | None = None,
        depends_on: list[int] | None = None,
        parent: int | None = None,
        assignee: str | None = None,
    ) -> Issue:
        caller.require(Op.ISSUE_WRITE)
        actor = actor_name(caller, agent)
        title = rules.line("title", title, max_len=rules.MAX_TITLE)
        body = rules.text("body", body, max_len=rules.MAX_BODY, required=False)
        labels = rules.labels("labels", labels or [])
        deps = _check_deps("depends_on", depends_on)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await self.check_actor(tx.conn, proj.id, caller, agent)
            await self._check_refs(tx.conn, proj.id, deps, parent)
            assignee_id = await self._assignee_id(tx.conn, caller, proj.id, actor, assignee)
            issue_id = await store.insert(
                tx.conn,
                project_id=proj.id,
                title=title,
                body=body,
                priority=priority,
                labels=labels,
                assignee_id=assignee_id,
                parent_id=parent,
                created_by=actor,
                now=tx.now,
            )
            await dependency_store.add_dependencies(tx.conn, issue_id, deps)
            issue = await store.get(tx.conn, proj.id, issue_id)
            tx.emit(
                EventType.ISSUE_CREATED,
                actor,
                proj.id,
                id=issue_id,
                title=title,
                priority=priority.value,
                depends_on=deps,
                assignee=issue.assignee,
            )
            if await dependency_store.is_ready(tx.conn, issue_id):
                tx.emit(EventType.ISSUE_READY, actor, proj.id, id=issue_id, title=title)
        return issue

    async def _check_refs(
        self, conn: Connection, project_id: int, deps: list[int], parent: int | None
    ) -> None:
        missing = set(deps) - await store.existing_ids(conn, project_id, deps)
        if missing:
            raise InvalidInput("depends_on", f"no such issue(s) in this project: {sorted(missing)}")
        if parent is not None and not await store.existing_ids(conn, project_id, [parent]):
            raise InvalidInput("parent", f"no such issue in this project: {parent}")

    async def _assignee_id(
        self, conn: Connection, caller: Caller, project_id: int, actor: str, assignee: str | None
    ) -> int | None:
        if assignee is None:
            return None
        rules.text("assignee", assignee, max_len=rules.MAX_NAME, required=False)  # a name, not an essay
        if assignee != actor:
            caller.require(Op.ISSUE_ASSIGN_OTHERS)
        try:
            return (await agent_store.get(conn, project_id, assignee, lock=True)).id  # not retiring meanwhile
        except NotFound:
            raise InvalidInput("assignee", f"no active agent named {assignee!r} in this project") from None

    async def list(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        status: IssueStatus | None = None,
        assignee: str | None = None,
        label: str | None = None,
        ready: bool | None = None,
        query: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IssuePage:
        """Issues in id order (ready ones: by priority, then age), `limit` at a time."""
        caller.require(Op.ISSUE_READ)
        limit = rules.limit("limit", limit)
        async with self.snapshot() as conn:
            proj = await self.project(conn, caller, project)
            if query:
                rules.text("query", query, max_len=rules.MAX_LINE)
            for field, value, most in (
                ("assignee", assignee, rules.MAX_NAME),
                ("label", label, rules.MAX_LABEL),
            ):
                if value:  # as on both databases: no longer than what it could match
                    rules.text(field, value, max_len=most)
            if cursor:
                rules.text("cursor", cursor, max_len=rules.MAX_CURSOR)
            by_priority = bool(ready)
            after = _parse_cursor(cursor, by_priority) if cursor else None
            where = store.Filter(
                status=status, assignee=assignee, label=label, query=query, ready=ready, after=after
            )
            items = await store.page(conn, proj.id, where, limit=limit + 1)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = f"{last.priority.value}:{last.id}" if by_priority else str(last.id)
        return IssuePage(items=items, next_cursor=next_cursor)

    async def get(self, caller: Caller, issue_id: int, *, project: str | None = None) -> IssueDetail:
        caller.require(Op.ISSUE_READ)
        async with self.snapshot() as conn:
            proj = await self.project(conn, caller, project)
            issue = await store.get(conn, proj.id, issue_id)
            deps = await store.by_ids(conn, issue.depends_on)
            dependants = await store.by_ids(conn, await dependency_store.dependants(conn, issue_id))
            return IssueDetail(
                issue=issue,
                comments=await comment_store.comments_of(conn, issue_id),
                dependencies=deps,
                dependants=dependants,
                ready=await dependency_store.is_ready(conn, issue_id),
            )

    async def update(
        self,
        caller: Caller,
        issue_id: int,
        *,
        project: str | None = None,
        agent: str | None = None,
        title: str | None = None,
        body: str | None = None,
        status: IssueStatus | None = None,
        priority: Priority | None = None,
        labels: builtins.list[str] | None = None,
        depends_on: builtins.list[int] | None = None,
        parent: int | None = UNSET,
        assignee: str | None = UNSET,
        expected_version: int | None = None,
    ) -> Issue:
        """Change the given fields. `assignee=None` unassigns; `parent=None` detaches.

        Unassigning an issue in progress reopens it; setting in_progress with nobody assigned
        is refused."""
        caller.require(Op.ISSUE_WRITE)
        actor = actor_name(caller, agent)
        values = _field_values(title, body, status, priority, labels)
        deps = None if depends_on is None else _check_deps("depends_on", depends_on)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await self.check_actor(tx.conn, proj.id, caller, agent)
            # dependencies are locked before the issue's row (upstream first, as a close locks the
            # closed issue, then its dependants), so the two never wait on each other in a ring; the
            # new ones' statuses are read as they are locked (the locks keep them so), the ones it has
            # once the issue is read (`check_dependencies_done`, below)
            waiting = None
            if deps is not None:  # changes to the graph queue first, before locking any row
                await locks.lock_project(tx.conn, locks.DEPENDENCIES, proj.id)
                waiting = await claims.unfinished_dependencies(tx.conn, deps)
            if deps is None and status == IssueStatus.IN_PROGRESS:  # starting it checks the ones it has
                await dependency_store.lock_dependencies(tx.conn, issue_id)
            # locked until the transaction ends: concurrent updates queue, each checks what the one
            # before it committed (PostgreSQL; SQLite's writes are serial already)
            current = await store.get_for_update(tx.conn, proj.id, issue_id)
            caller.require_issue_change(issue_id, actor, current.assignee)
            if expected_version is not None and expected_version != current.version:
                raise VersionConflict(
                    f"issue {issue_id} is at version {current.version}, not {expected_version}; "
                    "re-read it and retry",
                    id=issue_id,
                    current_version=current.version,
                    expected_version=expected_version,
                )
            if deps is not None:
                # what the new dependencies are is checked before what their statuses mean: a cycle
                # (the issue itself among them, or waiting on it) is refused as the cycle it is,
                # whatever the issue's status, never as "waits on unfinished dependencies"
                await self._check_refs(tx.conn, proj.id, deps, None)
                graph = await dependency_store.dependency_graph(tx.conn, proj.id)
                graph.pop(issue_id, None)
                cycle = rules.find_cycle(graph, issue_id, deps)
                if cycle is not None:
                    raise InvalidInput(
                        "depends_on",
                        f"would create a dependency cycle: {rules.cycle_text(cycle)}",
                        cycle=cycle[:10] + cycle[-10:] if len(cycle) > 20 else cycle,
                        cycle_length=len(cycle) - 1,
                    )
            if parent is not UNSET:
                if parent == issue_id:
                    raise InvalidInput("parent", "an issue cannot be its own parent")
                await self._check_refs(tx.conn, proj.id, [], parent)
                if parent is not None:
                    chain = await store.parent_chain(tx.conn, parent)
                    if issue_id in chain:
                        loop = [issue_id, *chain[: chain.index(issue_id) + 1]]
                        raise InvalidInput(
                            "parent",
                            f"would create a parent cycle: {rules.cycle_text(loop)} "
                            "(an issue cannot sit under its own sub-issue)",
                            cycle=loop[:10] + loop[-10:] if len(loop) > 20 else loop,
                        )
                values["parent_id"] = parent
            if assignee is not UNSET:
                values["assignee_id"] = await self._assignee_id(tx.conn, caller, proj.id, actor, assignee)
            # in progress means someone holds it: never leave an issue in progress with nobody
            # assigned (no one could finish it, and a claim takes only open issues)
            if (status or current.status) == IssueStatus.IN_PROGRESS and (
                current.assignee if assignee is UNSET else assignee
            ) is None:
                if status == IssueStatus.IN_PROGRESS:
                    raise InvalidInput(
                        "status", "in_progress needs an assignee: claim the issue, or give an assignee"
                    )
                values["status"] = IssueStatus.OPEN.value  # let go of it: it is open for a claim again
            elif waiting is not None and (status or current.status) == IssueStatus.IN_PROGRESS:
                claims.refuse_waiting(current, waiting)  # starting it, or it stays started, on new ones
            elif status == IssueStatus.IN_PROGRESS and current.status != IssueStatus.IN_PROGRESS:
                await claims.check_dependencies_done(tx.conn, current)  # as a claim would
            if status is not None and not status.finished and current.status.finished:
                # reopening it would leave the issues in progress on it waiting on an open one
                started = await dependency_store.in_progress_dependants(tx.conn, issue_id)
                if started:
                    raise Conflict(
                        f"issue {issue_id} cannot be reopened: issues in progress depend on it: "
                        f"{', '.join(f'#{d}' for d in started)}; finish them or put them back to open first",
                        id=issue_id,
                        dependants=started,
                    )
            if not values and deps is None:
                raise InvalidInput("fields", "nothing to change: give at least one field")
            finishing = status is not None and status.finished and not current.status.finished
            if finishing:  # as close_issue finishes it (without a resolution: update takes none)
                values["closed_at"] = tx.now
            elif status is not None and not status.finished and current.status.finished:
                values["resolution"] = None  # reopened: the resolution was the finished issue's
                values["closed_at"] = None
            if not await store.update(tx.conn, current, tx.now, **values):  # not with the row locked
                raise Conflict(f"issue {issue_id} changed while updating; re-read it and retry", id=issue_id)
            if deps is not None:
                await dependency_store.replace_dependencies(tx.conn, issue_id, deps)
            changed = sorted(v for v in values if v not in ("closed_at", "resolution"))
            changed += ["depends_on"] if deps is not None else []
            changed = [c.removesuffix("_id") for c in changed]
            tx.emit(
                EventType.ISSUE_UPDATED,
                actor,
                proj.id,
                id=issue_id,
                fields=changed,
                version=current.version + 1,
            )
            if finishing:
                assert status is not None
                tx.emit(
                    EventType.ISSUE_CLOSED,
                    actor,
                    proj.id,
                    id=issue_id,
                    status=status.value,
                    title=current.title,
                )
                await claims.announce_ready(tx, proj.id, issue_id, actor)
            return await store.get(tx.conn, proj.id, issue_id)

    async def claim(
        self,
        caller: Caller,
        issue_id: int | None = None,
        *,
        project: str | None = None,
        agent: str | None = None,
    ) -> Issue:
        """Atomically assign an issue to the caller: exactly one of many racing callers wins.

        Claiming an issue the caller already holds answers it as it is (a retried claim), changing
        nothing; claiming an open issue assigned to the caller starts it (in progress)."""
        caller.require(Op.ISSUE_WRITE)
        name = caller.acting_agent(agent)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            me = await self.acting_as(tx.conn, proj.id, caller, name, lock=True)  # not retiring meanwhile
            if issue_id is not None:
                held = await store.get(tx.conn, proj.id, issue_id)
                if held.assignee == name and held.status == IssueStatus.OPEN:
                    await claims.start_assigned(tx, held)
                    claimed = held
                elif held.assignee == name and not held.status.finished:
                    return held
                else:
                    claimed = await claims.take_named(tx, proj.id, held)
            else:
                claimed = await claims.take_best(tx, proj, me)
            await store.assign(tx.conn, claimed.id, me.id)
            if me.status != AgentStatus.WORKING:
                await agent_store.update(tx.conn, me.id, status=AgentStatus.WORKING.value)
            tx.emit(EventType.ISSUE_CLAIMED, name, proj.id, id=claimed.id, title=claimed.title, assignee=name)
            return await store.get(tx.conn, proj.id, claimed.id)

    async def comment(
        self,
        caller: Caller,
        issue_id: int,
        body: str,
        *,
        project: str | None = None,
        agent: str | None = None,
    ) -> Comment:
        caller.require(Op.ISSUE_WRITE)
        actor = actor_name(caller, agent)
        body = rules.text("body", body, max_len=rules.MAX_BODY)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await self.check_actor(tx.conn, proj.id, caller, agent)
            await store.get(tx.conn, proj.id, issue_id)
            comment_id = await comment_store.add_comment(tx.conn, issue_id, actor, body, tx.now)
            tx.emit(EventType.ISSUE_COMMENTED, actor, proj.id, id=issue_id, comment_id=comment_id)
        return Comment(id=comment_id, issue_id=issue_id, author=actor, body=body, created_at=tx.now)

    async def close(
        self,
        caller: Caller,
        issue_id: int,
        resolution: str,
        *,
        status: IssueStatus = IssueStatus.DONE,
        project: str | None = None,
        agent: str | None = None,
    ) -> ClosedIssue:
        """Finish an issue (done, or closed without doing it); returns the dependants it made ready."""
        caller.require(Op.ISSUE_WRITE)
        actor = actor_name(caller, agent)
        if not status.finished:
            raise InvalidInput("status", "must be done or closed")
        resolution = rules.text("resolution", resolution, max_len=rules.MAX_BODY)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await self.check_actor(tx.conn, proj.id, caller, agent)
            # locked: of concurrent closes, the first closes it and the others see it closed
            issue = await store.get_for_update(tx.conn, proj.id, issue_id)
            caller.require_issue_change(issue_id, actor, issue.assignee)
            if issue.status.finished:
                raise Conflict(f"issue {issue_id} is already {issue.status.value}", id=issue_id)
            closed = await store.update(
                tx.conn, issue, tx.now, status=status.value, resolution=resolution, closed_at=tx.now
            )
            if not closed:  # not with the row locked
                raise Conflict(f"issue {issue_id} changed while closing; retry", id=issue_id)
            tx.emit(
                EventType.ISSUE_CLOSED, actor, proj.id, id=issue_id, status=status.value, title=issue.title
            )
            now_ready = await claims.announce_ready(tx, proj.id, issue_id, actor)
            return ClosedIssue(issue=await store.get(tx.conn, proj.id, issue_id), now_ready=now_ready)


def _field_values(
    title: str | None,
    body: str | None,
    status: IssueStatus | None,
    priority: Priority | None,
    labels: list[str] | None,
) -> dict[str, Any]:
    """The checked column values of the fields an update gives."""
    values: dict[str, Any] = {}
    if title is not None:
        values["title"] = rules.line("title", title, max_len=rules.MAX_TITLE)
    if body is not None:
        values["body"] = rules.text("body", body, max_len=rules.MAX_BODY, required=False)
    if priority is not None:
        values["priority"] = priority.value
    if labels is not None:
        values["labels"] = rules.labels("labels", labels)
    if status is not None:
        values["status"] = status.value
    return values


def _parse_cursor(cursor: str, by_priority: bool) -> tuple[Priority, int] | int:
    """A cursor as this server writes them: an issue id (ASCII digits, within the ids' range), after
    a priority and a colon when the page is by priority. Anything else ("-5", "1e3", an id no issue
    can have) is refused naming `cursor`, as a page of something other than what was asked is wrong."""
    prio, _, last = cursor.partition(":") if by_priority else ("", "", cursor)
    if not (last.isascii() and last.isdigit() and int(last) <= rules.MAX_ID):
        raise InvalidInput("cursor", "not a cursor this server returned")
    if not by_priority:
        return int(last)
    try:
        return Priority(prio), int(last)
    except ValueError:
        raise InvalidInput("cursor", "not a cursor this server returned") from None
