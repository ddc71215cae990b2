"""Hypothesis on MCP tool arguments, through the official SDK client against a real server.

For every tool of the `full` profile: arguments generated from its input schema (valid ones) and
hostile ones (the tool's parameter names with arbitrary JSON: wrong types, huge numbers, odd
unicode, 60 KB strings). Every answer must be a result or a clean tool error: `[code] message` from
the service layer, or the SDK's own input-validation message. Never `[internal]`, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from vibe_ensemble.api.mcp import build_mcp
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

from ..support import ServerProcess, mcp_client, start_server
from .security_support import error_code, make_token

MAX_EXAMPLES = 50  # per tool, half valid and half hostile on average
QUICK = {"timeout_s": st.floats(min_value=0, max_value=0.05)}  # long polls answer at once
RAN: dict[str, int] = {}
ERRORS: dict[str, int] = {}


def _tools() -> list[tuple[str, dict[str, Any]]]:
    async def listing() -> list[tuple[str, dict[str, Any]]]:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = Runtime(Settings(data_dir=Path(tmp)))
            server = build_mcp(runtime.settings, profile="full")
            return [(t.name, t.input_schema) for t in await server.list_tools()]

    return asyncio.run(listing())


TOOLS = _tools()

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
# Lone surrogates cannot leave the SDK client (it cannot encode them); test_fuzz_protocol sends them raw.
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u202e",
        "\ufeff",
        "\ud7ff",
        "😀" * 50,
        "../../etc/passwd",
        "%s%n",
        "'; --",
        "vibe_x",
    ]
) | st.integers(60_000, 70_000).map(lambda n: "a" * n)


def _from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values matching a JSON schema of the kind pydantic writes for tool parameters."""
    if "$ref" in schema:
        return _from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return st.one_of([_from_schema(option, defs) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 300), 300))
    if kind == "array":
        items = _from_schema(schema.get("items", {}), defs)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 5), 5))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: _from_schema(v, defs) for k, v in props.items() if k in required},
            optional={k: _from_schema(v, defs) for k, v in props.items() if k not in required},
        )
    return JSON


def _with_quick(schema: dict[str, Any], args: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    overrides = {k: v for k, v in QUICK.items() if k in schema.get("properties", {})}
    if not overrides:
        return args
    return st.tuples(args, st.fixed_dictionaries(overrides)).map(lambda pair: {**pair[0], **pair[1]})


def _valid(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _with_quick(schema, _from_schema(schema, schema.get("$defs", {})))


def _hostile(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    props = list(schema.get("properties", {}))
    keys = st.sampled_from(props) if props else st.text(max_size=8)
    values = JSON | ODD_TEXT | st.integers(min_value=2**62, max_value=2**80)
    return _with_quick(schema, st.dictionaries(keys, values, max_size=len(props) or 1))


class RemoteClient:
    """An SDK client on its own event-loop thread, so synchronous Hypothesis tests can call it.

    One task on that loop opens the client and closes it (anyio wants both in the same task);
    tool calls are submitted to the loop from the test thread.
    """

    def __init__(self, url: str, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._opened = threading.Event()
        self._stop: asyncio.Event | None = None
        self.client: Client | None = None
        self._main = asyncio.run_coroutine_threadsafe(self._hold(url, token), self.loop)
        if not self._opened.wait(timeout=30):
            raise AssertionError(f"the MCP client did not connect: {self._main}")

    async def _hold(self, url: str, token: str) -> None:
        self._stop = asyncio.Event()
        async with mcp_client(url, token) as client:
            self.client = client
            self._opened.set()
            await self._stop.wait()

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        assert self.client is not None
        future = asyncio.run_coroutine_threadsafe(self.client.call_tool(tool, arguments), self.loop)
        return future.result(timeout=30)

    def close(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._main.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteClient]:
    env = {"VIBE_RATE_LIMIT_PER_MINUTE": json.dumps({"admin": 0})}
    server: ServerProcess = start_server(tmp_path_factory.mktemp("mcpfuzz"), extra_env=env)
    client = RemoteClient(server.mcp_url, make_token(server, "admin", label="mcp fuzzer"))
    try:
        client.call("register_agent", {"name": "fuzz-agent"})
        client.call("create_issue", {"title": "target", "agent": "fuzz-agent"})
        yield client
    finally:
        client.close()
        server.stop()
        print(
            f"\nMCP fuzz: {sum(RAN.values())} tool calls over {len(RAN)} tools; tool errors by code: {ERRORS}"
        )


def _check(remote: RemoteClient, tool: str, arguments: dict[str, Any]) -> None:
    RAN[tool] = RAN.get(tool, 0) + 1
    result = remote.call(tool, arguments)
    if not result.is_error:
        return
    text = str(getattr(result.content[0], "text", "")) if result.content else ""
    what = f"{tool}({json.dumps(arguments)[:300]}) -> {text[:500]}"
    assert "Traceback" not in text, what
    code = error_code(text)
    ERRORS[code or "sdk_validation"] = ERRORS.get(code or "sdk_validation", 0) + 1
    assert code != "internal", what
    assert code is not None or "validation error" in text.lower(), what


@pytest.mark.parametrize(("tool", "schema"), TOOLS, ids=[name for name, _ in TOOLS])
def test_tool_answers_every_argument_cleanly(remote: RemoteClient, tool: str, schema: dict[str, Any]) -> None:
    @given(arguments=_valid(schema) | _hostile(schema))
    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(arguments: dict[str, Any]) -> None:
        _check(remote, tool, arguments)

    run()
