"""Bad input: a clear error naming the field and the rule, and nothing in the database changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from vibe_ensemble.auth import tokens
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentStatus, IssueStatus, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound
from vibe_ensemble.services import Services

from .snapshot import snapshot

TOO_LONG = "x" * 65_537
Call = Callable[[Services, Caller], Awaitable[Any]]

INVALID: list[tuple[str, Call, str, str]] = [
    ("empty title", lambda s, a: s.issues.create(a, title="   "), "title", "must not be empty"),
    ("empty title on update", lambda s, a: s.issues.update(a, 1, title=""), "title", "must not be empty"),
    (
        "oversize issue body",
        lambda s, a: s.issues.create(a, title="t", body=TOO_LONG),
        "body",
        "must be at most 65536 characters (got 65537)",
    ),
    (
        "oversize body on update",
        lambda s, a: s.issues.update(a, 1, body=TOO_LONG),
        "body",
        "must be at most 65536 characters (got 65537)",
    ),
    (
        "oversize comment",
        lambda s, a: s.issues.comment(a, 1, TOO_LONG),
        "body",
        "must be at most 65536 characters (got 65537)",
    ),
    (
        "oversize message",
        lambda s, a: s.messages.send(a, agent="w1", to=["w1"], subject="s", body=TOO_LONG),
        "body",
        "must be at most 65536 characters (got 65537)",
    ),
    (
        "long title",
        lambda s, a: s.issues.create(a, title="t" * 201),
        "title",
        "must be at most 200 characters (got 201)",
    ),
    (
        "close to a status that is not finished",
        lambda s, a: s.issues.close(a, 1, "r", status=IssueStatus.OPEN),
        "status",
        "must be done or closed",
    ),
    (
        "heartbeat claiming to be offline",
        lambda s, a: s.agents.heartbeat(a, agent="w1", status=AgentStatus.OFFLINE),
        "status",
        "must be idle, working or blocked (offline is set by the server)",
    ),
    (
        "bad agent name",
        lambda s, a: s.agents.register(a, name="no spaces please"),
        "name",
        "must start with an ASCII letter or digit and use only ASCII letters, digits, '_', '.', '-'",
    ),
    ("bad project slug", lambda s, a: s.projects.create(a, slug="Web App"), "slug", "must be lowercase"),
    ("zero limit", lambda s, a: s.issues.list(a, limit=0), "limit", "must be between 1 and 500"),
    (
        "negative since_id",
        lambda s, a: s.messages.fetch_inbox(a, agent="w1", since_id=-1),
        "since_id",
        "must be 0 or a message id",
    ),
    ("negative event id", lambda s, a: s.events.page(a, after=-1), "after", "must be 0 or an event id"),
    (
        "empty label",
        lambda s, a: s.issues.create(a, title="t", labels=["ok", ""]),
        "labels[1]",
        "must not be empty",
    ),
    (
        "too many dependencies",
        lambda s, a: s.issues.create(a, title="t", depends_on=list(range(1, 102))),
        "depends_on",
        "at most 100 dependencies",
    ),
]

ONE_LINE = "must be one line without control characters"
INVALID += [
    ("a title with an escape sequence", lambda s, a: s.issues.create(a, title="t\x1b[2J"), "title", ONE_LINE),
    ("a title broken in two", lambda s, a: s.issues.update(a, 1, title="a\nb"), "title", ONE_LINE),
    ("a title with a line separator", lambda s, a: s.issues.create(a, title="a\u2028b"), "title", ONE_LINE),
    (
        "a subject with a paragraph separator",
        lambda s, a: s.issues.create(a, title="a\u2029b"),
        "title",
        ONE_LINE,
    ),
    (
        "a header in a subject",
        lambda s, a: s.messages.send(a, agent="w1", to=["w1"], subject="s\r\nBcc: x", body="b"),
        "subject",
        ONE_LINE,
    ),
    (
        "a thread id with a newline",
        lambda s, a: s.messages.send(a, agent="w1", to=["w1"], subject="s", body="b", thread_id="t\n1"),
        "thread_id",
        ONE_LINE,
    ),
    (
        "a label with a newline",
        lambda s, a: s.issues.create(a, title="t", labels=["a\nb"]),
        "labels[0]",
        ONE_LINE,
    ),
    (
        "an activity with a bell",
        lambda s, a: s.agents.heartbeat(a, agent="w1", activity="busy\x07"),
        "activity",
        ONE_LINE,
    ),
    (
        "a token label with an escape",
        lambda s, a: s.tokens.create(a, role=TokenRole.WORKER, label="a\x1b[31m"),
        "label",
        ONE_LINE,
    ),
    (
        "a token label holding a token (labels are listed and published in the event feed)",
        lambda s, a: s.tokens.create(a, role=TokenRole.WORKER, label="ci vibe_" + "A" * 43),
        "label",
        "must not contain a token",
    ),
    (
        "a token label holding a generated token",
        lambda s, a: s.tokens.create(a, role=TokenRole.WORKER, label=f"ci {tokens.generate()} reader"),
        "label",
        "must not contain a token",
    ),
    (
        "a lease path with a newline",
        lambda s, a: s.reservations.reserve(a, ["a\nb.py"], agent="w1"),
        "paths[0]",
        "must not contain control characters",
    ),
    (
        "token expiry without a timezone",
        lambda s, a: s.tokens.create(a, role=TokenRole.WORKER, expires_at=datetime(2030, 1, 1)),
        "expires_at",
        "must include a timezone",
    ),
    (
        "token expiry in the past",
        lambda s, a: s.tokens.create(a, role=TokenRole.WORKER, expires_at=datetime(2000, 1, 1, tzinfo=UTC)),
        "expires_at",
        "must be in the future",
    ),
    (
        "token expiry past the last year in UTC",
        lambda s, a: s.tokens.create(
            a,
            role=TokenRole.WORKER,
            expires_at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        ),
        "expires_at",
        "must be a time between the years 1 and 9999 in UTC",
    ),
]

UNKNOWN: list[tuple[str, Call]] = [
    ("get", lambda s, a: s.issues.get(a, 404)),
    ("update", lambda s, a: s.issues.update(a, 404, title="t")),
    ("claim", lambda s, a: s.issues.claim(a, 404, agent="w1")),
    ("comment", lambda s, a: s.issues.comment(a, 404, "hello")),
    ("close", lambda s, a: s.issues.close(a, 404, "done")),
]


@pytest.fixture
async def seeded(services: Services, admin: Caller) -> Services:
    await services.agents.register(admin, name="w1")
    await services.issues.create(admin, title="the first issue")
    return services


async def test_invalid_input_names_field_and_rule(seeded: Services, admin: Caller) -> None:
    before = await snapshot(seeded.ctx.db)
    for case, call, field, rule in INVALID:
        with pytest.raises(InvalidInput) as err:
            await call(seeded, admin)
        assert err.value.field == field, case
        assert err.value.rule.startswith(rule), (case, err.value.rule)
        assert err.value.message.startswith(f"{field}: "), case
        assert err.value.details["field"] == field, case
        assert err.value.http_status == 422
        assert await snapshot(seeded.ctx.db) == before, case


async def test_a_token_label_that_starts_like_a_token_is_no_token(seeded: Services, admin: Caller) -> None:
    """Only a generated token's shape is refused in a label (`vibe_` and a run as long as its random
    part), not every word after `vibe_` (the log redactor's wider net)."""
    for label in ("vibe_ensemble_dashboard_reader", "vibe_ci"):
        credential, _ = await seeded.tokens.create(admin, role=TokenRole.VIEWER, label=label)
        assert credential.label == label


async def test_unknown_issue_is_not_found(seeded: Services, admin: Caller) -> None:
    before = await snapshot(seeded.ctx.db)
    for case, call in UNKNOWN:
        with pytest.raises(NotFound) as err:
            await call(seeded, admin)
        assert err.value.message == "issue 404 does not exist in this project", case
        assert err.value.details == {"id": 404}, case
        assert err.value.http_status == 404
        assert await snapshot(seeded.ctx.db) == before, case


async def test_an_issue_of_another_project_is_not_found(seeded: Services, admin: Caller) -> None:
    await seeded.projects.create(admin, slug="other")
    with pytest.raises(NotFound, match="issue 1 does not exist in this project"):
        await seeded.issues.get(admin, 1, project="other")
