"""One allowed-hosts check on every door of a real server: REST, the feeds (SSE and WebSocket), the
dashboard, the API docs, /metrics (without a metrics token) and MCP refuse a foreign `Host`; the
probes answer whatever the `Host`; no
redirect carries an origin built from the request's `Host`."""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator

import httpx2
import pytest

from ..support import ServerProcess, serving
from .security_support import INIT, MCP_HEADERS, auth

EVIL = "evil.example.com"
# (method, path, needs the admin token): one of each door
DOORS = [
    ("GET", "/api/v1/projects", True),
    ("GET", "/api/v1/openapi.json", False),
    ("GET", "/api/v1/docs", False),
    ("GET", "/api/v1/events/stream", True),
    ("GET", "/", False),
    ("GET", "/login", False),
    ("POST", "/login", False),
    ("GET", "/static/dashboard.css", False),
    ("GET", "/api/v1/nowhere", False),
    ("GET", "/metrics", False),  # without VIBE_METRICS_TOKEN (test_metrics_auth.py: with one)
]
PROBES = ["/healthz", "/readyz"]


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"VIBE_ALLOWED_HOSTS": json.dumps(["vibe.example.com", "127.0.0.1:*"])}
    yield from serving(tmp_path_factory.mktemp("hosts"), extra_env=env)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No VIBE_ALLOWED_HOSTS, on 127.0.0.1: loopback names only."""
    yield from serving(tmp_path_factory.mktemp("loopback"))


def _request(server: ServerProcess, method: str, path: str, host: str, token: bool) -> httpx2.Response:
    headers = {"Host": host, **(auth(server.admin_token) if token else {})}
    with (
        httpx2.Client(base_url=server.url, timeout=10) as client,
        client.stream(method, path, headers=headers) as response,
    ):
        if response.status_code == 200 and path.endswith("/stream"):
            return response  # an endless stream: its status is what counts
        response.read()
        return response


def _websocket_status(server: ServerProcess, host: str) -> str:
    """The status line a WebSocket handshake to the event feed gets (101 when upgraded)."""
    port = int(server.url.rsplit(":", 1)[1])
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /api/v1/events/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {server.admin_token}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


@pytest.mark.parametrize(("method", "path", "token"), DOORS)
def test_a_foreign_host_is_refused_on_every_door(
    named: ServerProcess, method: str, path: str, token: bool
) -> None:
    refused = _request(named, method, path, EVIL, token)
    assert refused.status_code == 421, (path, refused.status_code)
    assert refused.json()["error"]["code"] == "misdirected_request"
    assert "VIBE_ALLOWED_HOSTS" in refused.json()["error"]["message"]
    assert refused.headers["x-frame-options"] == "DENY"  # still inside the security headers
    served = _request(named, method, path, "vibe.example.com", token)
    assert served.status_code != 421, path


def test_a_foreign_host_is_refused_on_mcp_and_the_websocket(named: ServerProcess) -> None:
    headers = {**MCP_HEADERS, **auth(named.admin_token)}
    refused = httpx2.post(named.mcp_url, json=INIT, headers={**headers, "Host": EVIL})
    assert refused.status_code == 421
    assert refused.json()["error"]["message"].startswith("[misdirected_request] ")  # JSON-RPC on /mcp
    ok = httpx2.post(named.mcp_url, json=INIT, headers={**headers, "Host": "vibe.example.com"})
    assert ok.status_code == 200, ok.text
    assert " 403 " in _websocket_status(named, EVIL) + " "
    assert " 101 " in _websocket_status(named, "vibe.example.com") + " "


def test_on_mcp_a_foreign_origin_is_refused(named: ServerProcess) -> None:
    headers = {**MCP_HEADERS, **auth(named.admin_token), "Host": "vibe.example.com"}
    refused = httpx2.post(named.mcp_url, json=INIT, headers={**headers, "Origin": "https://evil.example.com"})
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].startswith("[origin_not_allowed] ")  # JSON-RPC on /mcp


def _raw_status(server: ServerProcess, head: str) -> str:
    """The status line a raw HTTP/1.1 request head gets."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n")
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def test_two_host_headers_are_refused_whichever_comes_first(named: ServerProcess) -> None:
    """A proxy in front may read the other Host than the one checked: two are refused (400)."""
    token = f"Authorization: Bearer {named.admin_token}\r\n"
    for first, second in (("vibe.example.com", EVIL), (EVIL, "vibe.example.com")):
        head = f"GET /api/v1/projects HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\n{token}"
        assert _raw_status(named, head).startswith("HTTP/1.1 400 "), (first, second)
    one = f"GET /api/v1/projects HTTP/1.1\r\nHost: vibe.example.com\r\n{token}"
    assert _raw_status(named, one).startswith("HTTP/1.1 200 ")
    origins = "Origin: http://vibe.example.com\r\nOrigin: https://evil.example.com\r\n"
    mcp = f"GET /mcp HTTP/1.1\r\nHost: vibe.example.com\r\n{origins}{token}"
    assert _raw_status(named, mcp).startswith("HTTP/1.1 400 ")


def test_an_absolute_form_target_is_checked_as_the_requests_host(named: ServerProcess) -> None:
    """`GET http://evil.example.com/… HTTP/1.1` is a request for evil.example.com, whatever its Host
    (RFC 9112): it was served, the check having read an allowed Host the target overrides."""
    token = f"Authorization: Bearer {named.admin_token}\r\n"
    foreign = f"GET http://{EVIL}/api/v1/projects HTTP/1.1\r\nHost: vibe.example.com\r\n{token}"
    assert _raw_status(named, foreign).startswith("HTTP/1.1 421 ")
    allowed = f"GET http://vibe.example.com/api/v1/projects HTTP/1.1\r\nHost: {EVIL}\r\n{token}"
    assert _raw_status(named, allowed).startswith("HTTP/1.1 200 ")
    port = named.url.rsplit(":", 1)[1]
    with_port = f"GET http://127.0.0.1:{port}/api/v1/projects HTTP/1.1\r\nHost: {EVIL}\r\n{token}"
    assert _raw_status(named, with_port).startswith("HTTP/1.1 200 ")
    garbled = f"GET http:///api/v1/projects HTTP/1.1\r\nHost: vibe.example.com\r\n{token}"
    assert _raw_status(named, garbled).startswith("HTTP/1.1 400 ")
    # Valid absolute-form requests are served as their origin-form would be: no path is "/", and a
    # WebSocket upgrade reaches its route (the whole URL was taken for the path: 403).
    no_path = f"GET http://vibe.example.com HTTP/1.1\r\nHost: {EVIL}\r\n"
    assert _raw_status(named, no_path).split(" ")[1] in ("200", "302", "303", "307"), _raw_status(
        named, no_path
    )
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET http://vibe.example.com/api/v1/events/ws HTTP/1.1\r\nHost: {EVIL}\r\n{token}"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    port = int(named.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(upgrade.encode() + b"\r\n")
        assert sock.recv(4096).decode("latin-1").startswith("HTTP/1.1 101 "), "the upgrade was refused"


@pytest.mark.parametrize("path", PROBES)
def test_probes_answer_whatever_the_host(named: ServerProcess, path: str) -> None:
    for host in (EVIL, "10.1.2.3:8080"):
        response = httpx2.get(named.url + path, headers={"Host": host, **auth(named.admin_token)})
        assert response.status_code == 200, (path, host, response.text)


def test_on_loopback_only_loopback_names_are_served(loopback: ServerProcess) -> None:
    port = loopback.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
        assert _request(loopback, "GET", "/api/v1/projects", host, True).status_code == 200, host
    for host in (EVIL, f"{EVIL}:{port}", "127.0.0.1.evil.example.com", f"localhost.{EVIL}:{port}"):
        assert _request(loopback, "GET", "/api/v1/projects", host, True).status_code == 421, host
    assert httpx2.get(loopback.url + "/healthz", headers={"Host": EVIL}).status_code == 200


def test_no_redirect_carries_an_origin_from_the_host(loopback: ServerProcess) -> None:
    """Starlette's trailing-slash redirect built `Location: http://<Host>/…`; it is off, and the
    dashboard's redirects are paths."""
    with httpx2.Client(base_url=loopback.url, timeout=10, follow_redirects=False) as client:
        slash = client.get("/api/v1/projects/", headers=auth(loopback.admin_token))
        assert slash.status_code == 404
        assert "location" not in slash.headers
        page = client.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        login = client.post("/login", data={"token": loopback.admin_token})
        assert login.status_code == 303 and login.headers["location"] == "/"
        again = client.get("/login")
        assert again.status_code == 303 and again.headers["location"] == "/"


def test_two_authorization_headers_are_refused_whichever_comes_first(named: ServerProcess) -> None:
    """A proxy in front may read (or strip, or log) the other credential than the one checked: a
    request with two `Authorization` headers is refused on REST, MCP and the dashboard, even when
    one of them is good, and nothing is served."""
    good, bad = f"Bearer {named.admin_token}", "Bearer vibe_" + "x" * 43
    for first, second in ((good, bad), (bad, good), (good, good)):
        headers = [("Host", "vibe.example.com"), ("Authorization", first), ("Authorization", second)]
        rest = httpx2.get(named.url + "/api/v1/projects", headers=headers)
        assert rest.status_code == 401, (first, second)
        assert rest.json()["error"] == {
            "code": "unauthenticated",
            "message": "send one Authorization header (this request carries 2)",
            "details": {},
        }
        mcp = httpx2.post(named.mcp_url, json=INIT, headers=[*headers, *MCP_HEADERS.items()])
        assert mcp.status_code == 401 and "send one Authorization header" in mcp.text
        page = httpx2.get(named.url + "/", headers=headers)
        assert page.status_code == 401 and "send one Authorization header" in page.text
    one = [("Host", "vibe.example.com"), ("Authorization", good)]
    assert httpx2.get(named.url + "/api/v1/projects", headers=one).status_code == 200
