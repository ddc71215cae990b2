"""Search in text written without spaces (Chinese, Japanese, Thai; Korean words with their particles):
a word is a whole run between spaces or punctuation, on both databases, as docs/knowledge.md and the
search tool's description say."""

from __future__ import annotations

from vibe_ensemble.api.mcp.tools.knowledge import search_knowledge
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.services import Services


async def test_an_unspaced_run_is_one_word(services: Services, admin: Caller, database_url: str) -> None:
    await services.agents.register(admin, name="ann")
    add = services.knowledge.add
    memo = await add(admin, kind=KnowledgeKind.NOTE, title="日本語のメモ", body="東京で会議", agent="ann")
    keyed = await add(
        admin,
        kind=KnowledgeKind.NOTE,
        title="大阪の会議",
        body="大阪で会議。キーワード: 大阪、会議",
        agent="ann",
    )
    seoul = await add(admin, kind=KnowledgeKind.NOTE, title="회의", body="서울에서 회의", agent="ann")

    async def found(query: str) -> list[int]:
        return sorted(hit.id for hit in await services.knowledge.search(admin, query))

    # a whole run is found; a part of it is not
    assert await found("日本語のメモ") == [memo.id]
    assert await found("東京で会議") == [memo.id]
    assert await found("日本語") == [] and await found("東京") == []
    assert await found("서울에서") == [seoul.id] and await found("서울") == []
    # words set apart by spaces or punctuation are words of their own: the documented way to be found
    assert await found("東京で会議 日本語") == [memo.id]
    assert await found("大阪") == [keyed.id]
    hits = await services.knowledge.search(admin, "会議")
    assert [h.id for h in hits] == [keyed.id] and "«会議»" in hits[0].snippet
    # a tag is a word on both databases, whatever its letters (SQLite indexed it ASCII-escaped before 0013)
    tagged = await add(
        admin, kind=KnowledgeKind.NOTE, title="t", body="travel notes", tags=["名古屋", "café"], agent="ann"
    )
    assert await found("名古屋") == [tagged.id]
    assert await found("café") == [tagged.id]
    assert [h.id for h in await services.knowledge.search(admin, "notes", tags=["名古屋"])] == [tagged.id]


def test_the_search_tool_says_how_unspaced_text_is_searched() -> None:
    description = search_knowledge.__doc__ or ""
    assert "whole words" in description and "without spaces" in description
