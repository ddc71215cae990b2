"""What a client hook says when it refuses an edit: the leased paths of the edit, not all of them."""

from __future__ import annotations

from typing import Any

from vibe_ensemble.hooks import codex
from vibe_ensemble.hooks.core import lease_conflicts


class _Leases:
    """A server that says `lib/**` is bob's, exclusively."""

    def conflicts(self, path: str) -> list[dict[str, Any]]:
        if not path.startswith("lib/"):
            return []
        return [{"holder": "bob", "pattern": "lib/**", "expires_at": "2026-12-03T20:00:00Z", "reason": ""}]


def test_the_refusal_names_only_the_leased_paths() -> None:
    reason = lease_conflicts(["src/free.py", "lib/moved.py"], _Leases())  # type: ignore[arg-type]
    assert reason is not None
    assert reason.startswith("Vibe Ensemble: lib/moved.py is leased to another agent.")
    both = lease_conflicts(["lib/a.py", "src/free.py", "lib/b.py"], _Leases())  # type: ignore[arg-type]
    assert both is not None and both.startswith(
        "Vibe Ensemble: lib/a.py, lib/b.py are leased to another agent."
    )
    assert lease_conflicts(["src/free.py"], _Leases()) is None  # type: ignore[arg-type]


def test_codex_patch_headers_are_read_as_codex_reads_them() -> None:
    """Codex trims each line before it looks for a file header: an indented one edits the file too."""
    lines = [
        "*** Begin Patch",
        "  *** Delete File: src/held.py",
        "\t*** Update File: a.py",
        "*** Move to: b.py ",
    ]
    patch = "\n".join([*lines, "*** End Patch"])
    event = {"tool_name": "apply_patch", "tool_input": {"command": patch}}
    assert codex.edited(event) == ["src/held.py", "a.py", "b.py"]
