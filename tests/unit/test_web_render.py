"""How the dashboard renders agent text it highlights: escaped pieces, never markup."""

from __future__ import annotations

from vibe_ensemble.api.web.render import marked, templates


def test_search_snippets_are_split_into_marked_pieces_never_markup() -> None:
    assert marked("a «b» c «d»") == [("a ", False), ("b", True), (" c ", False), ("d", True)]
    assert marked("no marks") == [("no marks", False)]
    assert marked("open «end") == [("open ", False), ("«end", False)]
    template = templates().env.from_string(
        "{% for t, hit in s | marked %}"
        "{% if hit %}<mark>{{ t }}</mark>{% else %}{{ t }}{% endif %}"
        "{% endfor %}"
    )
    assert template.render(s="<b>«<script>»") == "&lt;b&gt;<mark>&lt;script&gt;</mark>"


def test_bidirectional_controls_in_agent_text_are_shown_not_obeyed() -> None:
    template = templates().env.from_string("<td>{{ title }}</td>{{ n }}")
    trojan = "fix \u202eexe.txt\u2066 done"
    assert template.render(title=trojan, n=3) == "<td>fix ⟦U+202E⟧exe.txt⟦U+2066⟧ done</td>3"
    assert template.render(title="<b>\u200f", n=None) == "<td>&lt;b&gt;⟦U+200F⟧</td>None"
    assert template.render(title="plain", n=0) == "<td>plain</td>0"
