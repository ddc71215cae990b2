"""The SDK's refusals of a 2026-era request (its checks of the envelope, the routing headers and the
version, made before any handler runs) said as ours are: `[code] …` with `data` `{code, field, rule}`,
-32022 listing every version this server speaks (docs/user-guide.md#errors). The SDK's own
classifier makes each refusal here, so a change in its wording shows."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp_types.version import SUPPORTED_PROTOCOL_VERSIONS

from vibe_ensemble.api.mcp.refusals import META_RULE, said_as_ours

PV = "io.modelcontextprotocol/protocolVersion"
CAPS = "io.modelcontextprotocol/clientCapabilities"
META = {PV: "2026-07-28", CAPS: {}}
HEADERS = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}


def refused(body: dict[str, Any], headers: dict[str, str] | None = HEADERS) -> dict[str, Any]:
    verdict = classify_inbound_request(body, headers=headers)
    assert isinstance(verdict, InboundLadderRejection), verdict
    error = {"code": verdict.code, "message": verdict.message, "data": verdict.data}
    ours = said_as_ours(error, request=body, version_named="MCP-Protocol-Version")
    assert ours is not None, error
    return ours


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (None, " (got none)"),
        ({}, " (got none)"),
        ({"_meta": "x"}, " (got str)"),
        ({"_meta": {PV: "2026-07-28"}}, f" (missing: {CAPS})"),
        ({"_meta": {}}, f" (missing: {PV}, {CAPS})"),
    ],
)
def test_a_missing_or_short_envelope_is_invalid_input_naming_params_meta(
    params: dict[str, Any] | None, problem: str
) -> None:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    if params is not None:
        body["params"] = params
    ours = refused(body)
    assert ours == {
        "code": -32602,
        "message": f"[invalid_input] params._meta: {META_RULE}{problem}",
        "data": {"code": "invalid_input", "field": "params._meta", "rule": META_RULE},
    }


def test_a_version_that_is_no_string_is_invalid_input_naming_params_meta_too() -> None:
    """Only a transport without headers (stdio) gets this far with it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {**META, PV: 5}}}
    ours = refused(body, headers=None)
    assert ours["code"] == -32602 and ours["data"]["field"] == "params._meta"
    assert ours["message"] == f"[invalid_input] params._meta: {META_RULE}"


@pytest.mark.parametrize(
    ("method", "headers", "params", "field"),
    [
        ("tools/list", {"mcp-protocol-version": "2026-07-28"}, {}, "Mcp-Method"),
        ("tools/list", {**HEADERS, "mcp-method": "ping"}, {}, "Mcp-Method"),
        ("tools/list", {**HEADERS, "mcp-protocol-version": "2025-11-25"}, {}, "MCP-Protocol-Version"),
        ("tools/call", {**HEADERS, "mcp-method": "tools/call"}, {"name": "claim_issue"}, "Mcp-Name"),
    ],
)
def test_a_routing_header_missing_or_not_the_body_s_is_named_with_its_rule(
    method: str, headers: dict[str, str], params: dict[str, Any], field: str
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}}
    ours = refused(body, headers)
    assert ours["code"] == -32020  # the protocol's code for it, kept
    assert ours["message"] == f"[invalid_request] {ours['data']['rule']}"
    assert ours["data"]["code"] == "invalid_request" and ours["data"]["field"] == field
    assert ours["data"]["rule"].startswith(f"the {field} header must ")


def test_a_version_not_spoken_lists_every_version_this_server_speaks() -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": {**META, PV: "2027-01-01"}},
    }
    ours = refused(body, {**HEADERS, "mcp-protocol-version": "2027-01-01"})
    assert ours["code"] == -32022
    assert ours["message"].startswith(
        "[unsupported_protocol_version] MCP-Protocol-Version '2027-01-01' is not one this server speaks: "
    )
    assert ours["data"] == {"supported": list(SUPPORTED_PROTOCOL_VERSIONS), "requested": "2027-01-01"}
    assert set(SUPPORTED_PROTOCOL_VERSIONS) > {"2026-07-28", "2025-11-25"}
    # A version it speaks, refused where it does not fit, is the SDK's to tell.
    fits_not = {"code": -32022, "message": "initialize not here", "data": {"requested": "2025-11-25"}}
    assert said_as_ours(fits_not) is None


def test_ours_and_other_errors_pass_through() -> None:
    ours = {
        "code": -32602,
        "message": "[invalid_input] tools/list: cursor: …",
        "data": {"code": "invalid_input"},
    }
    assert said_as_ours(ours) is None
    assert said_as_ours({"code": -32601, "message": "Method not found", "data": "nope"}) is None
    # A -32600 about a request that is one (the older era's connection refusing the 2026 envelope).
    one = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    assert said_as_ours({"code": -32600, "message": "not on this connection"}, request=one) is None
    batch = said_as_ours({"code": -32600, "message": "Body must be a single …"}, request=[one])
    assert batch is not None and batch["data"]["field"] == "body"
    assert "a batch (an array) is not accepted" in batch["message"]
