"""MCP tools for what the team learned: add, update, search, read."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vibe_ensemble.api.mcp.context import acting
from vibe_ensemble.api.mcp.params import AgentArg, Id, IssueLinks, Label, ProjectArg, Tags, items, text
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.models import KnowledgeDetail, KnowledgeEntry, KnowledgeHit
from vibe_ensemble.domain.rules import MAX_BODY, MAX_ID, MAX_LABELS, MAX_TITLE
from vibe_ensemble.services.knowledge import MAX_ISSUE_LINKS, MAX_QUERY


async def add_knowledge(
    kind: Annotated[
        KnowledgeKind,
        Field(description="pattern, practice, guideline (a rule), decision (and why) or note."),
    ],
    title: Annotated[str, text("What it is about, in a line.", MAX_TITLE)],
    body: Annotated[
        str,
        text("Markdown: the lesson, with enough context to act on.", MAX_BODY),
    ],
    tags: Tags = None,
    issue_ids: IssueLinks = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> KnowledgeEntry:
    """Record what you learned that the next agent should know: a pitfall, a convention, a decision."""
    services, caller = acting()
    return await services.knowledge.add(
        caller,
        project=project,
        agent=agent,
        kind=kind,
        title=title,
        body=body,
        tags=tags,
        issue_ids=issue_ids,
    )


async def update_knowledge(
    id: Annotated[int, Field(ge=1, le=MAX_ID, description="The entry's id.")],
    kind: Annotated[KnowledgeKind | None, Field(description="New kind.")] = None,
    title: Annotated[str | None, text("New title.", MAX_TITLE)] = None,
    body: Annotated[str | None, text("New body (replaces it).", MAX_BODY)] = None,
    tags: Annotated[list[Label] | None, items("Replaces the tags.", MAX_LABELS)] = None,
    issue_ids: Annotated[list[Id] | None, items("Replaces the linked issues.", MAX_ISSUE_LINKS)] = None,
    expected_version: Annotated[
        int | None, Field(description="Fail unless the entry is still at this version.", ge=1, le=MAX_ID)
    ] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> KnowledgeEntry:
    """Correct or extend an entry that is out of date; the previous version stays readable."""
    services, caller = acting()
    return await services.knowledge.update(
        caller,
        id,
        project=project,
        agent=agent,
        kind=kind,
        title=title,
        body=body,
        tags=tags,
        issue_ids=issue_ids,
        expected_version=expected_version,
    )


async def search_knowledge(
    query: Annotated[
        str,
        text("Words to look for; any text is fine.", MAX_QUERY),
    ],
    kind: Annotated[KnowledgeKind | None, Field(description="Only entries of this kind.")] = None,
    tags: Annotated[
        list[Label] | None,
        items("Only entries with all these tags (any letter case).", MAX_LABELS),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=50, description="At most this many results.")] = 10,
    project: ProjectArg = None,
) -> list[KnowledgeHit]:
    """Before solving a problem or making a convention, search what the team already knows.

    Best matches first; the snippet marks matched words «like this». Matches whole words: in text
    written without spaces (Chinese, Japanese), a word is a whole run between spaces or punctuation.
    """
    services, caller = acting()
    return await services.knowledge.search(caller, query, project=project, kind=kind, tags=tags, limit=limit)


async def get_knowledge(
    id: Annotated[int, Field(ge=1, le=MAX_ID, description="The entry's id (from search_knowledge).")],
    project: ProjectArg = None,
) -> KnowledgeDetail:
    """Read a whole knowledge entry and its earlier versions."""
    services, caller = acting()
    return await services.knowledge.get(caller, id, project=project)


TOOLS = (
    add_knowledge,
    update_knowledge,
    search_knowledge,
    get_knowledge,
)
