"""A knowledge search ranks each word's newest matches, not every entry that holds a word: at most
`WINDOW` entries a word, and `WINDOW` with the word in a title or tags, every one of them for a word
fewer entries hold. So a word that thousands of entries hold costs two windows of scores, and an old
entry holding a rare word of the query, or a common one in its title, is still found. A search of at
most `ALL_RANKED` matches ranks them all. A search narrowed to a kind or tags has the windows of
the entries that pass. Both are set to 3 here; in the server they are 1,000 and 4,000. On both
databases: SQLite's windows are FTS5 queries (store/knowledge_rank.py), PostgreSQL's the rows of
`knowledge_terms` (store/knowledge.py), which a trigger keeps as entries are written and edited."""

from __future__ import annotations

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.services import Services
from vibe_ensemble.store import knowledge_rank

WINDOW = 3


def _windows_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knowledge_rank, "WINDOW", WINDOW)
    monkeypatch.setattr(knowledge_rank, "ALL_RANKED", WINDOW)


async def _add(services: Services, admin: Caller, title: str, body: str, **extra: object) -> int:
    kind = extra.pop("kind", KnowledgeKind.NOTE)
    entry = await services.knowledge.add(
        admin, project="w", agent="ann", kind=kind, title=title, body=body, **extra
    )
    return entry.id


@pytest.fixture
async def team(services: Services, admin: Caller) -> Services:
    await services.projects.create(admin, slug="w")
    await services.agents.register(admin, name="ann", project="w")
    return services


async def _ids(services: Services, admin: Caller, query: str, **extra: object) -> list[int]:
    hits = await services.knowledge.search(admin, query, project="w", limit=50, **extra)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    return [h.id for h in hits]


async def test_a_common_word_ranks_its_newest_matches(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = team
    lease = [await _add(services, admin, f"Entry {i}", "renew the lease before it ends") for i in range(6)]
    await _add(services, admin, "Unrelated", "nothing to see")
    assert sorted(await _ids(services, admin, "lease")) == lease
    monkeypatch.setattr(knowledge_rank, "WINDOW", WINDOW)
    assert sorted(await _ids(services, admin, "lease")) == lease  # six matches: all ranked, no windows
    _windows_of_three(monkeypatch)
    assert sorted(await _ids(services, admin, "lease")) == lease[-WINDOW:]


async def test_an_old_entry_with_a_rare_word_is_still_found_first(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = team
    old = await _add(
        services, admin, "Deadlock in the lease table", "a deadlock when two lease renewals race"
    )
    newer = [await _add(services, admin, f"Lease {i}", f"lease notes {i}") for i in range(6)]
    everything = await _ids(services, admin, "lease deadlock")
    _windows_of_three(monkeypatch)
    windowed = await _ids(services, admin, "lease deadlock")
    assert windowed[0] == everything[0] == old  # the rare word's every match is a candidate
    assert set(windowed) == {old, *newer[-WINDOW:]}
    # A candidate scores what it scored among all the matches (its statistics are the project's).
    full = {h.id: h.score for h in await services.knowledge.search(admin, "lease", project="w", limit=50)}
    monkeypatch.undo()
    assert full == {
        h.id: h.score
        for h in await services.knowledge.search(admin, "lease", project="w", limit=50)
        if h.id in full
    }


async def test_a_search_narrowed_to_a_kind_ranks_the_newest_matches_of_that_kind(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Narrowed to a kind, a search's windows are of the entries of that kind: older decisions behind
    a crowd of newer notes are found, and past the threshold the newest decisions are ranked."""
    services = team
    decisions = [
        await _add(services, admin, f"Decision {i}", "the lease lasts a minute", kind=KnowledgeKind.DECISION)
        for i in range(2)
    ]
    for i in range(6):
        await _add(services, admin, f"Note {i}", "lease lease lease")
    _windows_of_three(monkeypatch)
    assert sorted(await _ids(services, admin, "lease", kind=KnowledgeKind.DECISION)) == decisions
    assert decisions[0] not in await _ids(services, admin, "lease")  # unnarrowed: the windows' notes
    newer = [
        await _add(services, admin, f"Decision {i}", "renew the lease", kind=KnowledgeKind.DECISION)
        for i in range(2, 5)
    ]
    assert sorted(await _ids(services, admin, "lease", kind=KnowledgeKind.DECISION)) == newer  # windowed
    assert await _ids(services, admin, "lease", kind=KnowledgeKind.GUIDELINE) == []


async def test_a_kind_narrows_a_search_without_changing_its_scores(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kind weighs nothing in a score, and a kind's name in a query is a word of the text, never
    the kind: an entry scores the same narrowed or not."""
    services = team
    decision = await _add(
        services, admin, "Lease decision", "renew the lease", kind=KnowledgeKind.DECISION, tags=["ops"]
    )
    note = await _add(services, admin, "Remarks", "the lease of a decision")
    pattern = await _add(services, admin, "Pattern", "a lease pattern", kind=KnowledgeKind.PATTERN)
    every = {h.id: h.score for h in await services.knowledge.search(admin, "lease decision", project="w")}
    for kind, entry in ((KnowledgeKind.DECISION, decision), (KnowledgeKind.NOTE, note)):
        hits = await services.knowledge.search(admin, "lease decision", project="w", kind=kind)
        assert [(h.id, h.score) for h in hits] == [(entry, every[entry])]
    hits = await services.knowledge.search(
        admin, "lease", project="w", kind=KnowledgeKind.DECISION, tags=["OPS"]
    )
    assert [h.id for h in hits] == [decision]
    assert await _ids(services, admin, "pattern") == [pattern]  # the text's word, not the kind's name
    assert await _ids(services, admin, "note") == []  # no entry's text says it; one is of that kind
    for token in (knowledge_rank.kind_token("note"), knowledge_rank.tag_token("ops")):
        assert await _ids(services, admin, token.strip('"')) == []  # no query word is an index's token


async def test_a_search_narrowed_by_tags_ranks_the_newest_matches_carrying_them(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Narrowed by tags, a search's windows are of the entries carrying every tag, in any letter
    case, each tag matched whole: not a tag that holds it, nor two tags that make it."""
    services = team
    tagged = [await _add(services, admin, f"Tagged {i}", "lease renewals", tags=["Ops"]) for i in range(2)]
    await _add(services, admin, "Near misses", "lease", tags=["ops-team", "dev ops", "operations"])
    for i in range(6):
        await _add(services, admin, f"Note {i}", "lease lease lease")
    _windows_of_three(monkeypatch)
    assert sorted(await _ids(services, admin, "lease", tags=["ops"])) == tagged  # two pass: all ranked
    assert tagged[0] not in await _ids(services, admin, "lease")  # unnarrowed: the windows' notes
    both = await _add(services, admin, "Both", "lease", tags=["OPS", "db"], kind=KnowledgeKind.DECISION)
    newer = [await _add(services, admin, f"Tagged {i}", "the lease", tags=["ops", "db"]) for i in range(2, 5)]
    assert sorted(await _ids(services, admin, "lease", tags=["ops"])) == newer  # windowed: the newest
    assert sorted(await _ids(services, admin, "lease", tags=["db", "Ops"])) == newer  # four carry both
    assert await _ids(services, admin, "lease", tags=["ops", "db"], kind=KnowledgeKind.DECISION) == [both]
    assert await _ids(services, admin, "lease", tags=["ops team"]) == []
    assert await _ids(services, admin, "lease", tags=["dev"]) == []
    quoted = await _add(services, admin, "Quoted", "lease", tags=['Café "名古屋" {kind}:'])
    assert await _ids(services, admin, "lease", tags=['CAFÉ "名古屋" {KIND}:']) == [quoted]


async def test_an_old_entry_with_the_word_in_its_title_is_still_found_first(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = team
    titled = await _add(services, admin, "Lease renewal checklist", "what to check before renewing")
    tagged = await _add(services, admin, "Renewals", "what to check", tags=["lease"])
    newer = [await _add(services, admin, f"Note {i}", f"the lease of note {i}") for i in range(6)]
    _windows_of_three(monkeypatch)
    found = await _ids(services, admin, "lease")
    assert found[:2] == [titled, tagged]  # a title weighs ten bodies, tags five
    assert set(found) == {titled, tagged, *newer[-WINDOW:]}


@pytest.mark.parametrize(
    "query",
    ["AND OR NOT NEAR lease", '"lease" * - ( ) {title} : ^lease', "café 日本語のメモ lease", "lease " * 40],
)
async def test_any_text_is_a_query_with_the_windows_too(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    """The windows' expressions are each word quoted by the server (in a title or tags too): FTS5's
    operators, column filters and quotes in a query are not words, and nothing reaches its parser."""
    services = team
    entries = [
        await _add(services, admin, f"Lease {i}", "café 日本語のメモ and or not near") for i in range(5)
    ]
    _windows_of_three(monkeypatch)
    found = await _ids(services, admin, query)
    assert sorted(found) == entries[-WINDOW:]  # each query holds a word of every entry
    assert sorted(await _ids(services, admin, query, kind=KnowledgeKind.NOTE)) == entries[-WINDOW:]
    assert sorted(await _ids(services, admin, query, tags=[])) == entries[-WINDOW:]


async def test_an_edited_entry_is_searched_by_its_new_words(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit replaces the entry's words in the windows (PostgreSQL: its `knowledge_terms` rows, by
    the trigger): the word it gained finds it, the word it lost no longer does, windowed or not."""
    services = team
    edited = await _add(services, admin, "Notes", "the cache warms slowly")
    leases = [await _add(services, admin, f"Lease {i}", "lease notes") for i in range(4)]
    await services.knowledge.update(admin, edited, project="w", agent="ann", body="a deadlock in the lease")
    assert await _ids(services, admin, "cache") == []
    assert await _ids(services, admin, "deadlock") == [edited]
    _windows_of_three(monkeypatch)  # five entries hold "lease": windowed
    assert set(await _ids(services, admin, "lease deadlock")) == {edited, *leases[-WINDOW:]}
    assert await _ids(services, admin, "cache") == []
    # A new kind too: its searches of a kind find it under the new one only.
    await services.knowledge.update(admin, leases[0], project="w", agent="ann", kind=KnowledgeKind.DECISION)
    assert await _ids(services, admin, "lease", kind=KnowledgeKind.DECISION) == [leases[0]]
    assert leases[0] not in await _ids(services, admin, "lease", kind=KnowledgeKind.NOTE)


async def test_a_search_is_windowed_when_its_words_hold_more_than_all_ranked_entries_not_rows(
    team: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the windows apply counts the entries holding any of the words, each once: one word
    held by more than `ALL_RANKED` (as soon as one does), or two words fewer hold each but more
    together; never two words held by the same few entries."""
    services = team
    both = [await _add(services, admin, f"Entry {i}", "alpha beta") for i in range(3)]
    gamma = [await _add(services, admin, f"Entry g{i}", "gamma") for i in range(2)]
    delta = [await _add(services, admin, f"Entry d{i}", "delta") for i in range(2)]
    epsilon = [await _add(services, admin, f"Entry e{i}", "epsilon") for i in range(4)]
    monkeypatch.setattr(knowledge_rank, "WINDOW", 1)
    monkeypatch.setattr(knowledge_rank, "ALL_RANKED", 3)
    # six rows of the words, three entries: all ranked
    assert sorted(await _ids(services, admin, "alpha beta")) == both
    # each word two entries, four together: each word's newest one
    assert sorted(await _ids(services, admin, "gamma delta")) == [gamma[-1], delta[-1]]
    assert sorted(await _ids(services, admin, "delta gamma")) == [gamma[-1], delta[-1]]
    # one word four entries, the other none or three others
    assert await _ids(services, admin, "epsilon omega") == [epsilon[-1]]
    assert sorted(await _ids(services, admin, "alpha epsilon")) == [both[-1], epsilon[-1]]
    assert sorted(await _ids(services, admin, "epsilon alpha")) == [both[-1], epsilon[-1]]
