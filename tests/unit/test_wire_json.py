"""The SDK's transport writes its answers with pydantic-core's encoder (api/mcp/wire_json.py)."""

from __future__ import annotations

import inspect
import json
from typing import Any

import mcp.server._streamable_http_modern as sdk_transport
import pytest

from vibe_ensemble.api.mcp import wire_json
from vibe_ensemble.api.mcp.wire_json import WireJson

COMPACT = {"separators": (",", ":")}
VALUES: list[Any] = [
    {"content": [{"type": "text", "text": '{"subject":"say \\"hi\\"","n":1}'}], "isError": False},
    {"text": 'café ☕ naïve — 漢字 \n\t"quoted" \\ </script> \u2028\u2029 \x00\x1f'},
    {"big": 2**70, "small": -(2**63), "float": 0.1, "exp": 1e20, "negzero": -0.0},
    {"none": None, "yes": True, "no": False, "empty": {}, "list": [], "tuple": ("a", 1)},
    {1: "an integer key"},
    [1, "two", [3.5, {"four": None}]],
    "just a string",
]


def test_the_sdk_writes_its_answers_through_json_dumps_in_the_compact_form() -> None:
    """A tripwire for an upgrade of `mcp`: `install` replaces the module's `json`, which its answer
    and its stream events are written with, in this form; a change there must be looked at."""
    for writer in (sdk_transport._write, sdk_transport._sse_event):
        assert 'json.dumps(body, separators=(",", ":"))' in inspect.getsource(writer)


@pytest.mark.parametrize("value", VALUES)
def test_dumps_reads_back_as_the_standard_library_s_and_is_the_same_in_ascii(value: Any) -> None:
    ours = WireJson().dumps(value, **COMPACT)
    theirs = json.dumps(value, **COMPACT)
    assert json.loads(ours) == json.loads(theirs)
    if theirs == json.dumps(value, ensure_ascii=False, **COMPACT):  # no text beyond ASCII
        assert ours == theirs
    else:
        assert ours == json.dumps(value, ensure_ascii=False, **COMPACT)  # UTF-8, not \uXXXX


def test_what_pydantic_core_refuses_is_the_standard_library_s() -> None:
    lone = {"text": "x\ud800"}  # UTF-8 cannot hold it: escaped, as before
    assert WireJson().dumps(lone, **COMPACT) == json.dumps(lone, **COMPACT) == '{"text":"x\\ud800"}'
    with pytest.raises(TypeError):  # no JSON form: the standard library's own error
        WireJson().dumps({"x": object()}, **COMPACT)


def test_every_other_use_is_the_standard_library_s() -> None:
    value = {"b": "é", "a": [1, 2]}
    assert WireJson().dumps(value) == json.dumps(value)
    assert WireJson().dumps(value, indent=2, sort_keys=True) == json.dumps(value, indent=2, sort_keys=True)
    assert WireJson().loads is json.loads
    assert WireJson().JSONDecodeError is json.JSONDecodeError


def test_install_gives_the_sdk_module_our_json_once() -> None:
    wire_json.install()
    installed = vars(sdk_transport)["json"]
    assert isinstance(installed, WireJson)
    wire_json.install()
    assert vars(sdk_transport)["json"] is installed
