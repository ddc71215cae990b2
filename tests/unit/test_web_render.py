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


def test_invisible_characters_in_agent_text_are_shown_not_hidden() -> None:
    """Unicode tag characters spell a sentence no one sees ("ASCII smuggling"), and zero-width
    characters make `docs` and `docs` two labels: the overseer sees every one as a mark. Emoji's
    joiners and variation selectors are left alone."""
    template = templates().env.from_string("{{ title }}")
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "PUSH")
    assert template.render(title="Fix typo" + hidden) == "Fix typo⟦U+E0050⟧⟦U+E0055⟧⟦U+E0053⟧⟦U+E0048⟧"
    assert template.render(title="docs\u200b\u2060\ufeff") == "docs⟦U+200B⟧⟦U+2060⟧⟦U+FEFF⟧"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f"
    assert template.render(title=family) == family


def test_the_terminal_shows_hiding_characters_as_escapes() -> None:
    from vibe_ensemble.ops.terminal import printable

    assert printable("a\u202eb\u200bc\U000e0041\x1b") == "a\\u202eb\\u200bc\\U000e0041\\x1b"
