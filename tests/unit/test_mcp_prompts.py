"""The briefing text: untrusted content stays inside fences it cannot close."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vibe_ensemble.domain.untrusted import fence, one_line


def test_fence_outgrows_the_backticks_inside() -> None:
    assert fence(["plain"]) == "```text\nplain\n```"
    assert fence(["a ``` b", "c"]) == "````text\na ``` b\nc\n````"
    assert fence([]) == "```text\n(none)\n```"


@given(st.lists(st.text(alphabet=st.sampled_from("`a \n#"), max_size=30), max_size=5))
def test_no_line_inside_can_close_the_fence(lines: list[str]) -> None:
    block = fence(one_line(line) for line in lines)
    opening, *inside, closing = block.split("\n")
    marker = opening.removesuffix("text")
    assert closing == marker and set(marker) == {"`"}
    assert not any(line.strip().startswith(marker) for line in inside)


def test_one_line_collapses_and_cuts() -> None:
    assert one_line("a\n\n# b\tc") == "a # b c"
    assert one_line("x" * 200, 10) == "x" * 9 + "…"
