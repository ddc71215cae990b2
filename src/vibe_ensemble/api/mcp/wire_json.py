"""The JSON the SDK's HTTP transport writes its answers with: pydantic-core's encoder, not the stdlib's.

The SDK's transport for the 2026-07-28 protocol (`mcp.server._streamable_http_modern`) writes every
answer, and every event of a stream, with `json.dumps(body, separators=(",", ":"))`: the standard
library's encoder with `ensure_ascii`, which escapes each string a character at a time. A tool's
answer carries its record twice, as the structured copy and as one text block holding the same
JSON, whose every quote is escaped again: in the swarm's loop (bench/instructions.py) that escaping
alone was 6.6% of a call's instructions. `install` gives that module a `json` whose `dumps` of that
compact form is pydantic-core's `to_json` (Rust): the same compact JSON, with text other than ASCII
written as UTF-8 rather than `\\uXXXX` (JSON's own encoding; RFC 8259 §8.1). Anything pydantic-core
refuses (a lone surrogate, which UTF-8 cannot hold, or a value JSON has no form for) goes to the
standard library as before, and every other name of the module (`loads`, `JSONDecodeError`) is the
standard library's.

The module is the SDK's own, not a published interface: `mcp` is pinned (pyproject.toml), and
tests/unit/test_wire_json.py fails if an upgrade stops it writing through its `json.dumps` this way.
"""

from __future__ import annotations

import json
from typing import Any

import mcp.server._streamable_http_modern as sdk_transport
from pydantic_core import PydanticSerializationError, to_json

COMPACT: dict[str, Any] = {"separators": (",", ":")}


class WireJson:
    """The standard library's `json`, but for `dumps` in the compact form (see the module)."""

    loads = staticmethod(json.loads)  # (each request's body: named here, not found by `__getattr__`)
    JSONDecodeError = json.JSONDecodeError

    def __getattr__(self, name: str) -> Any:  # any other name a later SDK reads
        return getattr(json, name)

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        if kwargs == COMPACT:
            try:
                return to_json(obj).decode()
            except PydanticSerializationError:
                pass  # said by the standard library, as before
        return json.dumps(obj, **kwargs)


def install() -> None:
    """The SDK's transport writes with `WireJson` from here on (in this process; once is enough)."""
    namespace = vars(sdk_transport)  # the module's globals, where its functions find `json`
    if not isinstance(namespace["json"], WireJson):
        namespace["json"] = WireJson()
