"""Malformed requests against a real server: broken JSON-RPC, wrong content types, odd JSON and
unicode. Every one gets a 4xx (REST in the error shape), none a 5xx, and the server stays healthy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest

from ..support import ServerProcess, start_server
from .security_support import auth

ACCEPT = "application/json, text/event-stream"
DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than any JSON parser's recursion limit, < 1 MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("protocol"))
    try:
        yield proc
    finally:
        proc.stop()


MCP_BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{not json", "application/json"),
    ("empty", b"", "application/json"),
    ("null", b"null", "application/json"),
    ("a number", b"42", "application/json"),
    ("empty batch", b"[]", "application/json"),
    ("not json-rpc", b'{"hello": "world"}', "application/json"),
    ("wrong version", b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', "application/json"),
    ("no method", b'{"jsonrpc": "2.0", "id": 1}', "application/json"),
    ("unknown method", b'{"jsonrpc": "2.0", "id": 1, "method": "no/such"}', "application/json"),
    (
        "params not an object",
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": 7}',
        "application/json",
    ),
    ("id is an object", b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', "application/json"),
    (
        "tool call before init",
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_agents"}}',
        "application/json",
    ),
    (
        "lone surrogate",
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
        b'"params": {"name": "create_issue", "arguments": {"title": "\\ud800"}}}',
        "application/json",
    ),
    ("deep nesting", DEEP, "application/json"),
    ("invalid utf-8", b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}', "application/json"),
    ("text/plain", b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}', "text/plain"),
    ("form", b"a=1&b=2", "application/x-www-form-urlencoded"),
    ("no content type", b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}', ""),
]


@pytest.mark.parametrize(("what", "body", "content_type"), MCP_BODIES, ids=[b[0] for b in MCP_BODIES])
def test_malformed_mcp_requests_get_a_client_error(
    server: ServerProcess, what: str, body: bytes, content_type: str
) -> None:
    headers = {**auth(server.admin_token), "Accept": ACCEPT}
    if content_type:
        headers["Content-Type"] = content_type
    r = httpx2.post(server.mcp_url, content=body, headers=headers, timeout=10)
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code == 200:  # answered as JSON-RPC: then it is an error, or a result for a valid call
        answer = r.json()
        assert "error" in answer or "result" in answer, (what, answer)
        assert "Traceback" not in r.text
    assert httpx2.get(server.url + "/healthz").status_code == 200


REST_BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{not json", "application/json"),
    ("empty", b"", "application/json"),
    ("array", b"[]", "application/json"),
    ("string", b'"title"', "application/json"),
    ("extra field", b'{"title": "t", "admin": true}', "application/json"),
    ("wrong types", b'{"title": 5, "labels": "x", "priority": []}', "application/json"),
    ("duplicate keys", b'{"title": "a", "title": "b\\u0000"}', "application/json"),
    ("NaN", b'{"title": "t", "depends_on": [NaN]}', "application/json"),
    ("huge number", b'{"title": "t", "parent": 1' + b"0" * 5000 + b"}", "application/json"),
    ("lone surrogate", b'{"title": "\\ud800"}', "application/json"),
    ("surrogate in label", b'{"title": "t", "labels": ["\\udfff"]}', "application/json"),
    ("deep nesting", b'{"title": "t", "labels": ' + DEEP + b"}", "application/json"),
    ("invalid utf-8", b'{"title": "\xff\xfe"}', "application/json"),
    ("text/plain", b'{"title": "t"}', "text/plain"),
    ("form", b"title=t", "application/x-www-form-urlencoded"),
    ("multipart", b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"),
]


@pytest.mark.parametrize(("what", "body", "content_type"), REST_BODIES, ids=[b[0] for b in REST_BODIES])
def test_malformed_rest_bodies_get_a_client_error_in_the_error_shape(
    server: ServerProcess, what: str, body: bytes, content_type: str
) -> None:
    r = httpx2.post(
        server.url + "/api/v1/projects/default/issues",
        content=body,
        headers={**auth(server.admin_token), "Content-Type": content_type},
        timeout=10,
    )
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] and error["message"], (what, error)
    assert "Traceback" not in r.text
    if content_type != "application/json":  # it was never read as JSON: the error says how to send it
        assert error["message"] == "body: the body must be JSON, sent with Content-Type: application/json"


def test_a_second_mcp_protocol_version_header_is_refused(server: ServerProcess) -> None:
    """The SDK reads one copy of `MCP-Protocol-Version`; a proxy before it may have routed the request
    by the other, so two are refused (as two `Mcp-Method`, `Host` or `Origin` headers are)."""
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    headers = [
        *auth(server.admin_token).items(),
        ("Accept", ACCEPT),
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", "2025-11-25"),
        ("MCP-Protocol-Version", "2026-07-28"),
    ]
    r = httpx2.post(server.mcp_url, content=body, headers=headers, timeout=10)
    assert r.status_code == 400
    assert (
        r.json()["error"]["message"]
        == "[invalid_request] the MCP-Protocol-Version header must appear at most once"
    )
    one = httpx2.post(server.mcp_url, content=body, headers=headers[:-1], timeout=10)
    assert one.status_code == 200 and "result" in one.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/api/v1/events/stream"), ("POST", "/logout"), ("GET", "/fragments/board")],
)
def test_a_session_cookie_with_non_ascii_bytes_is_no_session(
    server: ServerProcess, method: str, path: str
) -> None:
    """A dashboard cookie whose signature holds bytes past ASCII (`é` as UTF-8, read back as Latin-1)
    is a forged cookie like any other: the login page or 401, never a 500 (hmac.compare_digest raised
    TypeError on non-ASCII text)."""
    raw = "vibe_session=v1.1.9999999999.nonce.\u00c3\u00a9".encode("latin-1")
    with httpx2.Client(timeout=10) as client:
        headers = {b"Cookie": raw, b"Origin": server.url.encode()}
        r = client.request(method, server.url + path, headers=headers)
    assert r.status_code in (303, 401), (path, r.status_code, r.text[:300])
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "text",
    [
        "emoji 😀 and 👩🏽‍💻",
        "right-to-left \u202e override",
        "zero\u200bwidth",
        "combining e\u0301",
        "bom \ufeff",
    ],
)
def test_unicode_text_round_trips(server: ServerProcess, text: str) -> None:
    headers = auth(server.admin_token)
    made = httpx2.post(
        server.url + "/api/v1/projects/default/issues",
        json={"title": text, "body": text * 3},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    got = httpx2.get(server.url + f"/api/v1/projects/default/issues/{made.json()['id']}", headers=headers)
    assert (got.json()["issue"]["title"], got.json()["issue"]["body"]) == (text, text * 3)


def test_nothing_malformed_was_stored(server: ServerProcess) -> None:
    page = httpx2.get(
        server.url + "/api/v1/projects/default/issues",
        params={"limit": 500},
        headers=auth(server.admin_token),
    ).json()
    titles = [i["title"] for i in page["items"]]
    assert not {"a", "b", "t", "title"} & set(titles)
    assert json.dumps(page).count("\\ud800") == 0
