"""Values the database cannot hold are bad input on every backend, never a crash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.services import Services

from .snapshot import snapshot


@pytest.mark.parametrize("huge", [2**63, 2**80, -(2**70)])
async def test_ids_past_64_bits_are_invalid_input(services: Services, admin: Caller, huge: int) -> None:
    await services.agents.register(admin, name="w1")
    before = await snapshot(services.ctx.db)
    with pytest.raises(InvalidInput, match="out of the range the server can store"):
        await services.issues.get(admin, huge)
    with pytest.raises(InvalidInput, match="out of the range"):
        await services.issues.create(admin, title="t", depends_on=[huge])
    with pytest.raises(InvalidInput, match="out of the range"):
        await services.messages.mark_read(admin, [huge], agent="w1")
    assert await snapshot(services.ctx.db) == before


async def test_lone_surrogates_are_invalid_input(services: Services, admin: Caller) -> None:
    before = await snapshot(services.ctx.db)
    with pytest.raises(InvalidInput) as refused:
        await services.issues.create(admin, title="a\ud800b")
    assert (refused.value.field, refused.value.rule) == (
        "title",
        "must be valid Unicode (no lone surrogates)",
    )
    with pytest.raises(InvalidInput, match="valid Unicode"):
        await services.issues.create(admin, title="fine", body="x\udfffy")
    # values that no rule looks at are still refused cleanly, by the store
    with pytest.raises(InvalidInput, match="valid Unicode"):
        await services.issues.list(admin, assignee="w\ud800")
    with pytest.raises(InvalidInput, match="is not an event type"):
        await services.events.page(admin, types=["issue.\udc00"])  # the service's own rule, first
    assert await snapshot(services.ctx.db) == before


class Untouchable(list[Any]):
    """A caller's list that must be refused by its length alone: looking at an entry fails."""

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("the list was looped over before its length was checked")

    def __getitem__(self, index: Any) -> Any:
        raise AssertionError("an entry was read before the list's length was checked")


def _huge(n: int, value: Any) -> Untouchable:
    out = Untouchable()
    out.extend([value] * n)  # list.extend of a plain list does not go through our __iter__
    return out


# (what, the call, the field, the rule): every list a caller sizes, just past its bound
BOUNDS: list[tuple[str, Callable[[Services, Caller, list[Any]], Awaitable[Any]], str, str, int, Any]] = [
    ("issue labels", lambda s, c, v: s.issues.create(c, title="t", labels=v), "labels", "entries", 32, "l"),
    (
        "issue deps",
        lambda s, c, v: s.issues.create(c, title="t", depends_on=v),
        "depends_on",
        "dependencies",
        100,
        1,
    ),
    (
        "capabilities",
        lambda s, c, v: s.agents.register(c, name="w9", capabilities=v),
        "capabilities",
        "entries",
        32,
        "c",
    ),
    (
        "knowledge tags",
        lambda s, c, v: s.knowledge.add(c, agent="w1", kind=KnowledgeKind.NOTE, title="t", body="b", tags=v),
        "tags",
        "entries",
        32,
        "t",
    ),
    (
        "knowledge links",
        lambda s, c, v: s.knowledge.add(
            c, agent="w1", kind=KnowledgeKind.NOTE, title="t", body="b", issue_ids=v
        ),
        "issue_ids",
        "issues",
        50,
        1,
    ),
    (
        "recipients",
        lambda s, c, v: s.messages.send(c, agent="w1", subject="s", body="b", to=v),
        "to",
        "recipients",
        200,
        "w1",
    ),
    ("message ids", lambda s, c, v: s.messages.mark_read(c, v, agent="w1"), "ids", "ids", 500, 1),
    (
        "lease paths",
        lambda s, c, v: s.reservations.reserve(c, v, agent="w1"),
        "paths",
        "entries",
        100,
        "src/**",
    ),
    (
        "checked paths",
        lambda s, c, v: s.reservations.check(c, v, agent="w1"),
        "paths",
        "entries",
        1000,
        "src/**",
    ),
    ("event types", lambda s, c, v: s.events.page(c, types=v), "types", "event types", 20, "issue.*"),
]


@pytest.mark.parametrize(
    ("what", "call", "field", "noun", "bound", "value"), BOUNDS, ids=[b[0] for b in BOUNDS]
)
async def test_caller_sized_lists_are_refused_by_length_before_any_work(
    services: Services,
    admin: Caller,
    what: str,
    call: Callable[[Services, Caller, list[Any]], Awaitable[Any]],
    field: str,
    noun: str,
    bound: int,
    value: Any,
) -> None:
    await services.agents.register(admin, name="w1")
    before = await snapshot(services.ctx.db)
    with pytest.raises(InvalidInput) as just_past:
        await call(services, admin, [value] * (bound + 1))
    assert just_past.value.field == field, what
    assert f"at most {bound} {noun}" in just_past.value.rule, (what, just_past.value.rule)
    # a huge list (as a 1 MiB body can carry) is refused by its length, its entries never looked at
    with pytest.raises(InvalidInput) as huge:
        await call(services, admin, _huge(200_000, value))
    assert huge.value.field == field and "(got 200000)" in huge.value.rule, (what, huge.value.rule)
    assert await snapshot(services.ctx.db) == before


async def test_event_types_are_checked_on_every_door(services: Services, admin: Caller) -> None:
    """The event page and the dashboard's recent events check types as the live feeds do."""
    with pytest.raises(InvalidInput) as bad:
        await services.events.page(admin, types=["not a type"])
    assert bad.value.field == "types" and "is not an event type" in bad.value.rule
    # well shaped but not in the catalogue: refused by name, with the nearest one
    for door in (services.events.page, services.events.recent):
        with pytest.raises(InvalidInput) as unknown:
            await door(admin, types=["issue.*", "agnet.*"])
        assert unknown.value.field == "types"
        assert unknown.value.rule.startswith(
            "'agnet.*' is not an event family of this server; did you mean agent.*?"
        )
    with pytest.raises(InvalidInput, match="at most 20 event types"):
        await services.events.recent(admin, types=["issue.*"] * 21)


async def test_names_of_other_agents_are_bounded_like_every_name(services: Services, admin: Caller) -> None:
    """An assignee or a recipient is a name: past MAX_NAME it is refused by its length, naming the
    field, and the refusal does not echo the value (a 100,000-character name made a 200 KB error)."""
    await services.agents.register(admin, name="w1")
    issue = await services.issues.create(admin, title="t")
    before = await snapshot(services.ctx.db)
    long = "n" * 100_000
    refusals = [
        (services.issues.create(admin, title="t", assignee=long), "assignee"),
        (services.issues.update(admin, issue.id, assignee=long), "assignee"),
        (services.messages.send(admin, subject="s", body="b", to=["w1", long], agent="w1"), "to[1]"),
    ]
    for call, field in refusals:
        with pytest.raises(InvalidInput) as refused:
            await call
        assert (refused.value.field, refused.value.rule) == (
            field,
            "must be at most 64 characters (got 100000)",
        )
        assert len(str(refused.value)) < 200
    assert await snapshot(services.ctx.db) == before


async def test_a_nul_in_a_project_or_a_filter_is_invalid_input_naming_it(
    services: Services, admin: Caller
) -> None:
    """PostgreSQL's text holds no NUL: these were "request: a number or date is out of the range"
    there, and a 404 or an empty page on SQLite."""
    with pytest.raises(InvalidInput) as refused:
        await services.issues.list(admin, project="a\x00b")
    assert (refused.value.field, refused.value.rule) == ("project", "must not contain NUL characters")
    for given in ({"label": "\x00"}, {"assignee": "a\x00"}):
        with pytest.raises(InvalidInput) as refused:
            await services.issues.list(admin, **given)
        assert (refused.value.field, refused.value.rule) == (
            next(iter(given)),
            "must not contain NUL characters",
        )
