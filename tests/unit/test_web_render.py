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
