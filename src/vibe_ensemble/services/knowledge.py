"""Knowledge: what the team learned, versioned, linked to issues, and searchable."""

from __future__ import annotations

from dataclasses import replace

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.errors import InvalidInput, VersionConflict
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import KnowledgeDetail, KnowledgeEntry, KnowledgeHit
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.services.issues import actor_name
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import knowledge as store
from vibe_ensemble.store.database import Connection

MAX_ISSUE_LINKS = 50
MAX_QUERY = 1000
MAX_SEARCH_LIMIT = 50


def _issue_ids(values: list[int]) -> list[int]:
    rules.count("issue_ids", values, MAX_ISSUE_LINKS, "issues")
    ids = sorted(set(values))
    if any(not 1 <= i <= rules.MAX_ID for i in ids):
        raise InvalidInput("issue_ids", "issue ids are positive integers")
    return ids


def _entry_id(value: int) -> int:
    if not 1 <= value <= rules.MAX_ID:
        raise InvalidInput("id", f"must be between 1 and {rules.MAX_ID}")
    return value


async def _check_issues(conn: Connection, project_id: int, ids: list[int]) -> None:
    missing: set[int] = set(ids) - await issue_store.existing_ids(conn, project_id, ids)
    if missing:
        raise InvalidInput("issue_ids", f"no such issue(s) in this project: {sorted(missing)}")


def query_terms(field: str, query: str) -> list[str]:
    """The words of a caller's search query (knowledge, mail), refused past `store.MAX_TERMS`: none
    is dropped unsaid."""
    found = store.words(query)
    if len(found) > store.MAX_TERMS:
        raise InvalidInput(field, f"at most {store.MAX_TERMS} words (got {len(found)})")
    return found


class KnowledgeService(Service):
    async def add(
        self,
        caller: Caller,
        *,
        kind: KnowledgeKind,
        title: str,
        body: str,
        project: str | None = None,
        agent: str | None = None,
        tags: list[str] | None = None,
        issue_ids: list[int] | None = None,
    ) -> KnowledgeEntry:
        caller.require(Op.KNOWLEDGE_WRITE)
        author = actor_name(caller, agent)
        title = rules.line("title", title, max_len=rules.MAX_TITLE)
        body = rules.text("body", body, max_len=rules.MAX_BODY)
        tags = rules.labels("tags", tags or [])
        links = _issue_ids(issue_ids or [])
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await self.check_actor(tx.conn, proj.id, caller, agent)
            await _check_issues(tx.conn, proj.id, links)
            entry_id = await store.insert(
                tx.conn,
                project_id=proj.id,
                kind=kind,
                title=title,
                body=body,
                tags=tags,
                issue_ids=links,
                author=author,
                now=tx.now,
            )
            entry = await store.get(tx.conn, proj.id, entry_id)
            tx.emit(
                EventType.KNOWLEDGE_ADDED,
                author,
                proj.id,
                id=entry_id,
                kind=kind.value,
                title=title,
                tags=tags,
                issue_ids=links,
            )
        return entry

    async def update(
        self,
        caller: Caller,
        entry_id: int,
        *,
        project: str | None = None,
        agent: str | None = None,
        kind: KnowledgeKind | None = None,
        title: str | None = None,
        body: str | None = None,
        tags: list[str] | None = None,
        issue_ids: list[int] | None = None,
        expected_version: int | None = None,
    ) -> KnowledgeEntry:
        """Write a new version; the previous one stays readable in the entry's versions."""
        caller.require(Op.KNOWLEDGE_WRITE)
        author = actor_name(caller, agent)
        entry_id = _entry_id(entry_id)
        if all(v is None for v in (kind, title, body, tags, issue_ids)):
            raise InvalidInput("fields", "give at least one of kind, title, body, tags, issue_ids")
        if title is not None:
            title = rules.line("title", title, max_len=rules.MAX_TITLE)
        if body is not None:
            body = rules.text("body", body, max_len=rules.MAX_BODY)
        if tags is not None:
            tags = rules.labels("tags", tags)
        links = None if issue_ids is None else _issue_ids(issue_ids)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await self.check_actor(tx.conn, proj.id, caller, agent)
            old = await store.get(tx.conn, proj.id, entry_id)
            if expected_version is not None and expected_version != old.version:
                raise VersionConflict(
                    f"knowledge entry {entry_id} is at version {old.version}, not {expected_version}; "
                    "read it again and reapply your change",
                    id=entry_id,
                    current_version=old.version,
                    expected_version=expected_version,
                )
            if links is not None:
                await _check_issues(tx.conn, proj.id, links)
            new = replace(
                old,
                kind=kind or old.kind,
                title=old.title if title is None else title,
                body=old.body if body is None else body,
                tags=old.tags if tags is None else tags,
                issue_ids=old.issue_ids if links is None else links,
            )
            changed = [
                f
                for f in ("kind", "title", "body", "tags", "issue_ids")
                if getattr(new, f) != getattr(old, f)
            ]
            if not changed:
                return old
            new = replace(new, author=author, version=old.version + 1, updated_at=tx.now)
            if not await store.replace(tx.conn, old, new):
                raise VersionConflict(
                    f"knowledge entry {entry_id} changed meanwhile; read it again", id=entry_id
                )
            entry = await store.get(tx.conn, proj.id, entry_id)
            tx.emit(
                EventType.KNOWLEDGE_UPDATED,
                author,
                proj.id,
                id=entry_id,
                version=entry.version,
                title=entry.title,
                changed=changed,
            )
        return entry

    async def get(self, caller: Caller, entry_id: int, *, project: str | None = None) -> KnowledgeDetail:
        """An entry with its earlier versions (newest first)."""
        caller.require(Op.KNOWLEDGE_READ)
        entry_id = _entry_id(entry_id)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            entry = await store.get(tx.conn, proj.id, entry_id)
            return KnowledgeDetail(entry=entry, versions=await store.versions(tx.conn, entry_id))

    async def search(
        self,
        caller: Caller,
        query: str,
        *,
        project: str | None = None,
        kind: KnowledgeKind | None = None,
        tags: list[str] | None = None,
        limit: int = 10,
    ) -> list[KnowledgeHit]:
        """Ranked full-text search. Any text is a valid query: only its words are used."""
        caller.require(Op.KNOWLEDGE_READ)
        if len(query) > MAX_QUERY:
            raise InvalidInput("query", f"must be at most {MAX_QUERY} characters (got {len(query)})")
        limit = rules.limit("limit", limit, maximum=MAX_SEARCH_LIMIT)
        tags = rules.labels("tags", tags or [])
        words = query_terms("query", query)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            return await store.search(tx.conn, proj.id, words, kind=kind, tags=tags, limit=limit)

    async def list(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        kind: KnowledgeKind | None = None,
        tags: list[str] | None = None,
        limit: int = 50,
    ) -> list[KnowledgeEntry]:
        """Entries most recently written first."""
        caller.require(Op.KNOWLEDGE_READ)
        limit = rules.limit("limit", limit)
        tags = rules.labels("tags", tags or [])
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            return await store.recent(tx.conn, proj.id, kind=kind, tags=tags, limit=limit)
