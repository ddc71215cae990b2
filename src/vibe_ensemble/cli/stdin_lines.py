"""stdin for the stdio MCP servers (`vibe-ensemble mcp`, on the database or `--url`), line by line, so
that a line which is no JSON-RPC message still gets an answer.

The SDK's stdio transport reads a line, and hands on either the message in it or, for a line it
cannot read, the exception, without the line: a request with `"params": "x"`, a lone surrogate in
its text (`\\ud800`) or a line that is not JSON went unanswered, and a client waited for that answer
for ever. `Lines` is the stdin it reads from, and keeps each line until its turn (`take`), so the
server answers such a line as JSON-RPC says: the error with the request's id when it can be read,
else with `id: null` (-32700 for a line that is not JSON). A request whose id is of another type
than JSON-RPC's (`true`) is read as a notification, which gets no answer: it is refused too.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from contextlib import suppress
from io import TextIOWrapper
from typing import Any

import anyio
import mcp_types as types

from vibe_ensemble.domain.rules import JSONRPC_ID_RULE

ENVELOPE_RULE = (
    'each line must be one JSON-RPC 2.0 message: an object with "jsonrpc": "2.0", a "method" (a '
    'string), an "id" (a string or an integer) for a request, and "params" (an object) when it has any; '
    "a batch (an array) is not accepted: write one message per line"
)
NOT_UNICODE = "text must be valid Unicode (no lone surrogates such as \\ud800)"
NOT_JSON = "Parse error: each line on stdin must be one JSON-RPC message, as JSON"


class _Unowned(TextIOWrapper):
    """A text layer over stdin's buffer that never closes the buffer (as the SDK's own)."""

    def close(self) -> None:
        with suppress(ValueError):
            self.detach()


class Lines:
    """stdin's lines, as the SDK's stdio transport reads them (`stdio_server(stdin=…)`), each kept
    until the item the transport made of it is taken: the transport reads a line, then hands on one
    item for it (a message or an exception), in order, so `take` after each item gives its line."""

    def __init__(self) -> None:
        # utf-8-sig: a byte-order mark before the first line (as some Windows tools write) is not part of it
        self._file = anyio.wrap_file(_Unowned(sys.stdin.buffer, encoding="utf-8-sig", errors="replace"))
        self._read: deque[str] = deque()

    def __aiter__(self) -> Lines:
        return self

    async def __anext__(self) -> str:
        line = await self._file.readline()
        if not line:
            raise StopAsyncIteration
        self._read.append(line)
        return line

    def take(self) -> str:
        """The line of the item just taken from the transport."""
        return self._read.popleft() if self._read else ""


def refusal(item: object, line: str) -> types.JSONRPCError | None:
    """The answer to the line an item of the transport came from (`line`), when the server would not
    answer it: the transport could not read it as a JSON-RPC message (`item` is the exception), or it
    took a request with a bad id for a notification (`bad_id`). None for every other message, and
    for a blank line (nothing was asked)."""
    if not isinstance(item, Exception):
        message = getattr(item, "message", None)
        return bad_id(message, line) if message is not None else None
    return _unreadable(line)


def _unreadable(line: str) -> types.JSONRPCError | None:
    text = line.strip()
    if not text:
        return None
    try:
        message: Any = json.loads(text)
    except (ValueError, RecursionError):
        return types.JSONRPCError(
            jsonrpc="2.0", id=None, error=types.ErrorData(code=types.PARSE_ERROR, message=NOT_JSON)
        )
    request_id = message.get("id") if isinstance(message, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        request_id = None
    try:
        json.dumps(message, ensure_ascii=False).encode()
        rule = ENVELOPE_RULE  # JSON, but not a message's shape
    except UnicodeEncodeError:
        rule = NOT_UNICODE  # a message's shape, perhaps, with text no Unicode holds
    return _invalid_request(request_id, rule, field="line")


def bad_id(message: object, line: str) -> types.JSONRPCError | None:
    """The answer to a request whose id is neither a string nor an integer (`true`, `null`, `1.5`):
    the transport took it for a notification, which gets no answer, and its client waited for one."""
    if not isinstance(message, types.JSONRPCNotification) or '"id"' not in line:
        return None
    try:
        parsed: Any = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict) or "id" not in parsed:
        return None
    return _invalid_request(None, JSONRPC_ID_RULE, field="id")


def _invalid_request(request_id: str | int | None, rule: str, *, field: str) -> types.JSONRPCError:
    """JSON-RPC's -32600, said as /mcp says it (api/mcp/endpoint.py, docs/user-guide.md#errors):
    `[invalid_request] rule`, with `{"code": "invalid_request", "field", "rule"}` as its data; the
    field is the `line` (a stdio server's message, as /mcp's is its `body`), or its `id`."""
    return types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=types.ErrorData(
            code=types.INVALID_REQUEST,
            message=f"[invalid_request] {rule}",
            data={"code": "invalid_request", "field": field, "rule": rule},
        ),
    )
