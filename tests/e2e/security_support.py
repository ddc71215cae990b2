"""Helpers for the security tests: tokens per role, and minimal valid inputs from a JSON schema."""

from __future__ import annotations

import re
from typing import Any

import httpx2

from ..support import ServerProcess, tls

# An MCP `initialize` as a client on the 2025-06-18 protocol sends it, and the headers /mcp needs.
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def make_token(
    server: ServerProcess,
    role: str,
    *,
    project: str | None = None,
    agent: str | None = None,
    label: str = "",
    tool_profile: str | None = "full",
) -> str:
    """A new token, created over REST with the server's admin token."""
    body: dict[str, Any] = {"role": role, "label": label or role, "tool_profile": tool_profile}
    if project:
        body["project"] = project
    if agent:
        body["agent"] = agent
    r = httpx2.post(
        server.url + "/api/v1/tokens",
        json=body,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
        verify=tls(),
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def error_code(tool_error: str) -> str | None:
    """The `[code]` of an MCP tool error ("Error executing tool x: [code] message …"), if any."""
    match = re.match(r"(?:Error executing tool \w+: )?\[([a-z_]+)\] ", tool_error)
    return match.group(1) if match else None


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sample(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """The smallest valid value of a JSON schema: required properties only, first enum member."""
    if "$ref" in schema:
        return sample(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return sample(options[0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample(props[name], defs) for name in schema.get("required", [])}
    if kind == "array":
        return [sample(schema.get("items", {"type": "integer"}), defs)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return "2099-01-01T00:00:00Z"
        return "probe"
    return None


def request_body(operation: dict[str, Any], openapi: dict[str, Any]) -> Any:
    """A minimal valid JSON body for an OpenAPI operation (None when it takes none)."""
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    return sample(schema, openapi.get("components", {}).get("schemas", {}))


def body_properties(operation: dict[str, Any], openapi: dict[str, Any]) -> set[str]:
    """The property names of an operation's JSON body (empty when it takes none)."""
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return set(schema.get("properties", {}))


def query_params(operation: dict[str, Any], openapi: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Required query parameters with minimal values, plus any of `fixed` the operation takes."""
    defs = openapi.get("components", {}).get("schemas", {})
    params: dict[str, Any] = {}
    for p in operation.get("parameters", []):
        if p["in"] != "query":
            continue
        if p["name"] in fixed:
            params[p["name"]] = fixed[p["name"]]
        elif p.get("required"):
            params[p["name"]] = sample(p.get("schema", {"type": "string"}), defs)
    return params
