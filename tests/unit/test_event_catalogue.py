"""The event catalogue (domain/events.py): every emitted type is in it, and everyone reads it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vibe_ensemble.api.feeds import reference
from vibe_ensemble.api.web.render import EVENT_TYPES
from vibe_ensemble.domain.events import CATALOGUE, EventFamily, EventType, family_of

SRC = Path(__file__).parents[2] / "src" / "vibe_ensemble"
LIVE_DOC = Path(__file__).parents[2] / "docs" / "live.md"


def _emit_calls() -> list[tuple[str, ast.Call]]:
    """Every `tx.emit(...)` and `new_event(...)` (an event a one-statement write appends itself), but
    `Transaction.emit`'s own call of `new_event`, which passes its argument on."""
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            emit = isinstance(node.func, ast.Attribute) and node.func.attr == "emit"
            new = isinstance(node.func, ast.Name) and node.func.id == "new_event"
            passed_on = path == SRC / "services" / "base.py" and [ast.unparse(a) for a in node.args[:1]] == [
                "type_"
            ]
            if emit or (new and not passed_on):
                calls.append((f"{path.relative_to(SRC)}:{node.lineno}", node))
    return calls


def _types_named(node: ast.expr) -> list[str] | None:
    """The EventType members an emit's first argument names, or None when it is anything else."""
    if isinstance(node, ast.IfExp):
        body, orelse = _types_named(node.body), _types_named(node.orelse)
        return None if body is None or orelse is None else body + orelse
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "EventType":
        return [node.attr]
    return None


def test_every_emit_names_a_catalogued_type_and_every_type_is_emitted() -> None:
    emitted: set[str] = set()
    calls = _emit_calls()
    assert len(calls) >= 20
    for where, call in calls:
        named = _types_named(call.args[0]) if call.args else None
        assert named is not None, f"{where}: emit takes an EventType member, not {ast.unparse(call.args[0])}"
        emitted.update(named)
    # A restore writes its event itself, into the database it restored (store/backup_carry.py).
    restore = (SRC / "store" / "backup_carry.py").read_text()
    assert "EventType.DATABASE_RESTORED" in restore
    assert emitted | {"DATABASE_RESTORED"} == {t.name for t in EventType}


def test_a_payload_must_match_its_catalogue_entry() -> None:
    spec = CATALOGUE[EventType.ISSUE_READY]
    spec.check({"id": 1, "title": "t"})
    spec.check({"id": 1, "title": "t", "unblocked_by": 2})
    with pytest.raises(ValueError, match=r"missing \['title'\]"):
        spec.check({"id": 1})
    with pytest.raises(ValueError, match=r"undeclared \['body'\]"):
        spec.check({"id": 1, "title": "t", "body": "secret"})


def test_every_type_has_its_family_and_a_description() -> None:
    assert list(CATALOGUE) == list(EventType)
    for event_type, spec in CATALOGUE.items():
        assert event_type.value.startswith(f"{spec.family.value}.")
        assert family_of(event_type.value) is spec.family
        assert spec.description and spec.payload
    assert {t.family for t in EventType} == set(EventFamily)
    assert family_of("nothing.known") is None


def test_the_dashboard_listens_to_every_catalogued_type() -> None:
    assert list(EVENT_TYPES) == [t.value for t in EventType]


def test_the_event_table_in_the_docs_is_generated_from_the_catalogue() -> None:
    text = LIVE_DOC.read_text()
    assert reference.splice(text) == text, (
        "run: python -m vibe_ensemble.api.feeds.reference --write docs/live.md"
    )
    for event_type in EventType:
        assert f"| `{event_type.value}` |" in text
