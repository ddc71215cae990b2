"""Parameter types shared by the MCP tools, documented once, and the published limits of text and lists.

`text` and `items` publish a limit in the tool's schema without making pydantic enforce it (and so
do `Label` and `Pattern`, for each entry of a list): the door enforces every published limit before
the tool runs (`arguments.strict_arguments`), and the service enforces its own (the same `rules`
constants as REST), each with an error that names the field and the rule (an entry by its index:
`labels[2]`), which is what an agent needs to correct itself. Every text and every list a tool takes
publishes its limit (tests/unit/test_published_limits.py; tests/integration/test_published_limits.py
checks that each published limit is the one the service enforces).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from vibe_ensemble.domain.rules import MAX_ID, MAX_LABEL, MAX_LABELS, MAX_NAME, MAX_PATTERN
from vibe_ensemble.services.knowledge import MAX_ISSUE_LINKS
from vibe_ensemble.services.reservations import MAX_CHECK_PATHS, MAX_RESERVE_PATHS


def text(description: str, max_length: int) -> Any:
    """A text argument of at most `max_length` characters (published; enforced by the service)."""
    return Field(description=description, json_schema_extra={"maxLength": max_length})


def bounded(max_length: int) -> Any:
    """A list's entry of at most `max_length` characters (published; enforced by the service)."""
    return Field(json_schema_extra={"maxLength": max_length})


def items(description: str, max_items: int, min_items: int = 0) -> Any:
    """A list argument of at most `max_items` entries (published; enforced by the service)."""
    bounds: dict[str, Any] = {"maxItems": max_items}
    if min_items:
        bounds["minItems"] = min_items
    return Field(description=description, json_schema_extra=bounds)


ProjectArg = Annotated[str | None, text("Project slug; default: the token's or the server's.", MAX_NAME)]
AgentArg = Annotated[
    str | None,
    text("Team tokens only: the agent to act as.", MAX_NAME),
]
AgentName = Annotated[str, Field(max_length=MAX_NAME)]  # an agent's name, as a list's item
Label = Annotated[str, bounded(MAX_LABEL)]  # a label, tag or capability, as a list's item
Pattern = Annotated[str, bounded(MAX_PATTERN)]  # a path, glob or named resource, as a list's item
IssueId = Annotated[int, Field(description="The issue's numeric id.", ge=1, le=MAX_ID)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
MessageIds = Annotated[
    list[Id], Field(description="Message ids from your inbox.", min_length=1, max_length=500)
]
PATHS_DOC = (
    "Repository-relative paths or git globs (src/api/**, **/*.py, docs/*.md), "
    "or named resources (service://staging-db)."
)
ReservePaths = Annotated[list[Pattern], items(PATHS_DOC, MAX_RESERVE_PATHS, min_items=1)]
CheckPaths = Annotated[list[Pattern], items(PATHS_DOC, MAX_CHECK_PATHS, min_items=1)]
Tags = Annotated[list[Label] | None, items("Short topic words, e.g. ['db', 'testing'].", MAX_LABELS)]
IssueLinks = Annotated[list[Id] | None, items("Ids of issues this is about.", MAX_ISSUE_LINKS)]
