"""stdin for the stdio MCP servers (`vibe-ensemble mcp`, on the database or `--url`), line by line, so
that a line which is no JSON-RPC message still gets an answer.

The SDK's stdio transport reads a line, and hands on either the message in it or, for a line it
cannot read, the exception, without the line: a request with `"params": "x"`, a lone surrogate in
its text (`\\ud800`) or a line that is not JSON went unanswered, and a client waited for that answer
for ever. `Lines` is the stdin it reads from, and keeps each line until its turn (`take`), so the
server answers such a line as JSON-RPC says: the error with the request's id when it can be read,
else with `id: null` (-32700 for a line that is not JSON).
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

ENVELOPE_RULE = (
    'each line must be one JSON-RPC 2.0 message: an object with "jsonrpc": "2.0", a "method" (a '
    'string), an "id" (a string or an integer) for a request, and "params" (an object) when it has any'
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
        self._file = anyio.wrap_file(_Unowned(sys.stdin.buffer, encoding="utf-8", errors="replace"))
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


def refusal(line: str) -> types.JSONRPCError | None:
    """The answer to a line the transport could not read as a JSON-RPC message; None for a blank
    line (nothing was asked)."""
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
        rule = ENVELOPE_RULE
    except UnicodeEncodeError:
        rule = NOT_UNICODE
    except (ValueError, RecursionError):
        rule = ENVELOPE_RULE
    return types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=types.ErrorData(
            code=types.INVALID_REQUEST,
            message=f"[invalid_input] {rule}",
            data={"code": "invalid_input", "rule": rule},
        ),
    )
