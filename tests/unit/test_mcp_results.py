"""A tool's record answered directly (`direct_results`) reads exactly as the SDK's own conversion did."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mcp import Client
from mcp.server import MCPServer
from mcp.server.runner import _dump_result
from mcp_types import CallToolResult, ContentBlock

from vibe_ensemble.api.mcp.context import WireResult, direct_results
from vibe_ensemble.api.mcp.profiles import PROFILES
from vibe_ensemble.api.mcp.server import answers_records, registered_tools
from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.models import Inbox, InboxItem, Message

WHEN = datetime(2026, 11, 30, 4, 5, 6, 789000, tzinfo=UTC)
INBOX = Inbox(
    items=[
        InboxItem(
            message=Message(
                id=7,
                project="default",
                sender="ana",
                recipients=["bo", "çé"],
                to_role=AgentRole.WORKER,
                broadcast=False,
                subject='say "hi" ✓',
                body="line one\nline two\ttabbed",
                thread_id="t-1",
                importance=Importance.HIGH,
                ack_required=True,
                created_at=WHEN,
            ),
            read_at=None,
            acked_at=WHEN,
        )
    ],
    unread=1,
    next_since_id=None,
)


async def inbox() -> Inbox:
    """An inbox."""
    return INBOX


async def ids() -> list[int]:
    """Some ids."""
    return [1, 2]


async def messages() -> list[Message]:
    """Some records."""
    return [INBOX.items[0].message, INBOX.items[0].message]


async def none() -> list[Message]:
    """No records."""
    return []


TOOLS = (inbox, ids, messages, none)


def server(direct: bool) -> MCPServer:
    mcp = MCPServer("t")
    for fn in TOOLS:
        mcp.add_tool(direct_results(fn) if direct else fn)
    return mcp


def compacted(block: ContentBlock) -> dict[str, Any]:
    """The SDK's text block, its indented JSON written compact (what agents got before)."""
    dumped = block.model_dump()
    dumped["text"] = json.dumps(json.loads(dumped["text"]), separators=(",", ":"), ensure_ascii=False)
    return dumped


async def test_a_record_reads_the_same_as_through_the_sdk() -> None:
    assert isinstance(await direct_results(inbox)(), CallToolResult)  # the SDK's conversion is skipped
    answers = {}
    for direct in (False, True):
        async with Client(server(direct)) as client:
            answers[direct] = [await client.call_tool(fn.__name__, {}) for fn in TOOLS]
    (sdk_inbox, sdk_ids, sdk_list, sdk_none), (our_inbox, our_ids, our_list, our_none) = (
        answers[False],
        answers[True],
    )
    assert not our_inbox.is_error
    assert our_inbox.structured_content == sdk_inbox.structured_content
    assert our_inbox.structured_content["items"][0]["message"]["created_at"] == "2026-11-30T04:05:06.789000Z"
    assert [c.model_dump() for c in our_inbox.content] == [compacted(c) for c in sdk_inbox.content]
    assert '"subject":"say \\"hi\\" ✓"' in our_inbox.content[0].text  # compact, not ASCII-escaped
    # A list: the structured copy under "result", as the SDK's; the text ONE block holding the whole
    # list (the SDK writes a block per item, and none for an empty list: a client reading the first
    # block saw one item of many, or nothing at all).
    assert isinstance(await direct_results(messages)(), CallToolResult)
    assert our_list.structured_content == sdk_list.structured_content
    assert len(sdk_list.content) == 2 and len(our_list.content) == 1
    assert json.loads(our_list.content[0].text) == [json.loads(c.text) for c in sdk_list.content]
    assert our_ids.structured_content == sdk_ids.structured_content == {"result": [1, 2]}
    assert [c.text for c in our_ids.content] == ["[1,2]"] and len(sdk_ids.content) == 2
    assert sdk_none.content == [] and our_none.structured_content == {"result": []}
    assert [c.text for c in our_none.content] == ["[]"]


def test_the_sdk_skips_checking_only_the_answers_we_write_from_their_own_type() -> None:
    tools = registered_tools()
    for fn in PROFILES["full"]:
        metadata = tools[fn.__name__].fn_metadata
        assert metadata.output_schema, f"{fn.__name__} publishes no output schema"  # clients check against it
        # A record (or list of records) is written from its own type by direct_results; anything else
        # still goes through the SDK's conversion and its check.
        assert (metadata.output_model is None) == answers_records(fn), fn.__name__
    assert not answers_records(ids) and answers_records(messages) and answers_records(inbox)
    assert tools["fetch_inbox"].fn_metadata.output_model is None
    assert tools["mark_read"].fn_metadata.output_model is not None


WIRE = {"by_alias": True, "mode": "json", "exclude_none": True}  # how the SDK's runner dumps a result


async def test_an_answers_wire_form_is_the_dict_pydantic_would_dump() -> None:
    for fn in (inbox, messages, none):
        answer = await direct_results(fn)()
        assert isinstance(answer, WireResult)
        ours, pydantics = answer.model_dump(**WIRE), CallToolResult.model_dump(answer, **WIRE)
        assert ours == pydantics and list(ours) == list(pydantics), fn.__name__
        assert json.dumps(ours) == json.dumps(pydantics)  # the same bytes on the wire, key order included
        # the SDK's runner dumps it this way: the structured copy is handed on, not walked again
        assert _dump_result(answer)["structuredContent"] is answer.structured_content
    # Other dumps, and a result changed after it was made, are pydantic's own
    answer = await direct_results(inbox)()
    assert answer.model_dump() == CallToolResult.model_dump(answer)
    answer.meta = {"note": "x"}
    assert answer.model_dump(**WIRE)["_meta"] == {"note": "x"}
    answer = await direct_results(inbox)()
    answer.is_error = True
    assert answer.model_dump(**WIRE)["isError"] is True
    answer = await direct_results(inbox)()
    answer.content = [*answer.content, *answer.content]
    assert len(answer.model_dump(**WIRE)["content"]) == 2
