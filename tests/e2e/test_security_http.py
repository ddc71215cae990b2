"""Transport hardening on a real server: headers, CORS, body limits, slow clients, rate limits,
DNS-rebinding protection behind a host name and a proxy, and secrets kept out of logs and events."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from vibe_ensemble.api.app import create_app
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

from ..support import ServerProcess, call_error, mcp_client, mcp_error, start_server
from .security_support import INIT, MCP_HEADERS, auth, error_code, make_token

HEAD_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small limits, a public host name, CORS for one origin and short body and head
    timeouts."""
    env = {
        "VIBE_RATE_LIMIT_PER_MINUTE": json.dumps({"viewer": 60}),
        "VIBE_RATE_LIMIT_BURST": "5",
        "VIBE_AUTH_FAILURES_PER_MINUTE": "600",
        "VIBE_ALLOWED_HOSTS": json.dumps(["vibe.example.com", "127.0.0.1:*"]),
        "VIBE_ALLOWED_ORIGINS": json.dumps(["https://vibe.example.com"]),
        "VIBE_CORS_ORIGINS": json.dumps(["https://app.example.com"]),
        "VIBE_BODY_TIMEOUT_S": "3",
        # as long as the body's: a head deadline left running past the head would cut the stalled
        # body's request first, with its own answer
        "VIBE_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "VIBE_MAX_BODY_BYTES": "100000",
        "VIBE_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),  # the tests play the reverse proxy
    }
    proc = start_server(tmp_path_factory.mktemp("hardened"), extra_env=env)
    try:
        yield proc
    finally:
        proc.stop()


def test_every_answer_carries_the_security_headers(hardened: ServerProcess) -> None:
    for method, path, headers in (
        ("GET", "/healthz", {}),
        ("GET", "/api/v1/projects", auth(hardened.admin_token)),
        ("GET", "/api/v1/nowhere", {}),
        ("POST", "/mcp", {}),
    ):
        r = httpx2.request(method, hardened.url + path, headers=headers)
        h = r.headers
        assert h["x-content-type-options"] == "nosniff", path
        assert h["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "default-src 'self'" in h["content-security-policy"]
        assert h["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in h  # plain HTTP
        assert "server" not in h
    docs = httpx2.get(hardened.url + "/api/v1/docs").headers["content-security-policy"]
    assert "cdn" not in docs and "unsafe-inline" not in docs  # Swagger UI from the package
    # the API's answers are one caller's data (a new token, the audit log): kept by no cache
    made = httpx2.post(
        hardened.url + "/api/v1/tokens", json={"role": "viewer"}, headers=auth(hardened.admin_token)
    )
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store", made.text
    for path in ("/api/v1/tokens", "/api/v1/audit", "/api/v1/projects"):
        listed = httpx2.get(hardened.url + path, headers=auth(hardened.admin_token))
        assert listed.headers["cache-control"] == "no-store", path


def test_hsts_when_a_trusted_proxy_says_https(hardened: ServerProcess) -> None:
    r = httpx2.get(hardened.url + "/healthz", headers={"X-Forwarded-Proto": "https"})
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")


def test_cors_answers_only_the_configured_origin(hardened: ServerProcess) -> None:
    def preflight(origin: str) -> httpx2.Response:
        return httpx2.options(
            hardened.url + "/api/v1/projects",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )

    ok = preflight("https://app.example.com")
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-credentials" not in ok.headers
    assert "access-control-allow-origin" not in preflight("https://evil.example.com").headers


async def test_cors_is_off_unless_configured(tmp_path: Path) -> None:
    app = create_app(Runtime(Settings(data_dir=tmp_path)))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        r = await client.options(
            "/api/v1/projects",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in r.headers


def test_bodies_over_the_limit_get_413_on_every_door(hardened: ServerProcess) -> None:
    big = {"title": "x", "body": "y" * 200_000}
    r = httpx2.post(
        hardened.url + "/api/v1/projects/default/issues", json=big, headers=auth(hardened.admin_token)
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    r = httpx2.post(
        hardened.url + "/mcp",
        content=b"[" + b"1," * 100_000 + b"1]",
        headers={**MCP_HEADERS, **auth(hardened.admin_token)},
    )
    assert r.status_code == 413
    # on /mcp a JSON-RPC error, which an MCP client shows (REST's envelope it showed as nothing)
    refused = r.json()
    assert refused["jsonrpc"] == "2.0" and refused["id"] is None, refused
    assert refused["error"]["code"] == -32000 and refused["error"]["data"]["code"] == "payload_too_large"
    assert refused["error"]["message"].startswith("[payload_too_large] "), refused

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"z" * 10_000

    r = httpx2.post(
        hardened.url + "/api/v1/projects",
        content=chunks(),
        headers={**auth(hardened.admin_token), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    issues = httpx2.get(
        hardened.url + "/api/v1/projects/default/issues", headers=auth(hardened.admin_token)
    ).json()
    assert issues["items"] == []


async def test_the_mcp_client_is_told_a_body_is_too_large(hardened: ServerProcess) -> None:
    """The official client showed only "Server returned an error response"."""
    with pytest.raises(BaseException) as refused:  # the SDK's task group wraps it
        async with mcp_client(hardened.mcp_url, hardened.admin_token) as client:
            await client.call_tool("create_issue", {"title": "x", "body": "y" * 200_000})
    error = mcp_error(refused.value)
    assert error.error.code == -32000, error
    assert error.error.message.startswith("[payload_too_large] request body larger than"), error


def _port(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _rest_of_answer(sock: socket.socket, head: bytes) -> bytes:
    """What is still to come of an HTTP answer whose first bytes are `head` (by its content-length)."""
    headers, _, body = head.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", headers)
    rest = b""
    while match and len(body) + len(rest) < int(match.group(1)):
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    return rest


def test_a_client_stalling_mid_body_gets_408_and_blocks_nobody(hardened: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=10) as slow:
        slow.sendall(
            b"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + hardened.admin_token.encode() + b"\r\n"
            b'Content-Length: 100\r\n\r\n{"slug":'
        )
        start = time.monotonic()
        assert httpx2.get(hardened.url + "/healthz", timeout=2).status_code == 200
        assert time.monotonic() - start < 2.0  # answered while the slow client still holds its request
        answer = slow.recv(4096)
        waited = time.monotonic() - start
        answer += _rest_of_answer(slow, answer)  # the body may arrive in a later segment
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"request_timeout" in answer
    assert 2.5 < waited < 15


def test_a_body_trickled_a_byte_at_a_time_gets_408_once_the_whole_is_late(
    hardened: ServerProcess,
) -> None:
    body = b'{"slug": "never-made", "name": "' + b"x" * 60 + b'"}'
    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=15) as slow:
        slow.sendall(
            b"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + hardened.admin_token.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        start = time.monotonic()
        slow.settimeout(0.3)  # each byte well within the 3 s the body may take, the whole not
        answer = b""
        for byte in body:
            slow.sendall(bytes([byte]))
            try:
                answer = slow.recv(4096)
                break
            except TimeoutError:
                continue
        waited = time.monotonic() - start
        slow.settimeout(15)
        answer += _rest_of_answer(slow, answer)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"request_timeout" in answer
    assert 2.8 < waited < 13, waited
    listed = httpx2.get(hardened.url + "/api/v1/projects", headers=auth(hardened.admin_token), timeout=5)
    assert "never-made" not in listed.text  # nothing was made


def test_slowloris_headers_do_not_starve_other_clients_and_are_cut_at_the_deadline(
    hardened: ServerProcess,
) -> None:
    sockets: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", _port(hardened)), timeout=15)
            sockets.append((s, time.monotonic()))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        first_opened = sockets[0][1]
        rounds = 0
        while rounds == 0 or time.monotonic() - first_opened < HEAD_TIMEOUT_S / 2:
            for s, _ in sockets:
                s.sendall(b"a")  # one byte at a time, never finishing the headers
            start = time.monotonic()
            r = httpx2.get(hardened.url + "/api/v1/projects", headers=auth(hardened.admin_token), timeout=5)
            assert r.status_code == 200, rounds
            assert time.monotonic() - start < 2.0
            rounds += 1
        # and each slow client is cut once its head has taken the deadline: 408, then closed
        for s, opened in sockets:
            answer = s.recv(4096)
            cut = time.monotonic() - opened
            answer += _rest_of_answer(s, answer)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:100]
            assert answer.endswith(b"request line and headers must arrive within %d s" % HEAD_TIMEOUT_S)
            assert b"x-content-type-options: nosniff" in answer.lower()
            assert s.recv(4096) == b""  # closed
            assert HEAD_TIMEOUT_S - 0.2 < cut < HEAD_TIMEOUT_S + 10, cut
    finally:
        for s, _ in sockets:
            s.close()


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(hardened: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=15) as idle:
        opened = time.monotonic()
        assert idle.recv(4096) == b""  # closed, with no answer: nothing was asked
        assert HEAD_TIMEOUT_S - 0.2 < time.monotonic() - opened < HEAD_TIMEOUT_S + 10


def test_each_request_of_a_keep_alive_connection_has_the_whole_head_deadline(hardened: ServerProcess) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * 20 + b"\r\n\r\n"
    pieces = [request[i : i + 10] for i in range(0, len(request), 10)]

    def trickle(s: socket.socket, over_s: float) -> None:
        """The request's head in pieces spread over `over_s` seconds."""
        for piece in pieces:
            s.sendall(piece)
            time.sleep(over_s / len(pieces))

    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=15) as s:
        opened = time.monotonic()
        s.sendall(request)
        answer = s.recv(4096)
        assert _status(answer + _rest_of_answer(s, answer)) == 200
        time.sleep(HEAD_TIMEOUT_S / 2)  # idle on the keep-alive connection (uvicorn allows 5 s)
        # the second head takes two thirds of the deadline: it ends past the deadline counted from
        # the connection's start, within it counted from its own first byte, and is served
        trickle(s, HEAD_TIMEOUT_S * 2 / 3)
        assert time.monotonic() - opened > HEAD_TIMEOUT_S
        answer = s.recv(4096)
        assert _status(answer + _rest_of_answer(s, answer)) == 200
        # a third one that never ends is cut at its own deadline
        started = time.monotonic()
        s.sendall(pieces[0])
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert HEAD_TIMEOUT_S - 0.2 < time.monotonic() - started < HEAD_TIMEOUT_S + 10


def _headers(kilobytes: int) -> bytes:
    return b"".join(b"X-Fill-%d: %s\r\n" % (i, b"a" * 1000) for i in range(kilobytes))


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_request_head_over_16_kb_gets_431_and_the_connection_closes(hardened: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=10) as s:
        # 17 KB of headers that never end: all of it is read before the server answers and closes
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _headers(17))
        answer = s.recv(4096)
        answer += _rest_of_answer(s, answer)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert answer.endswith(b"request line and headers must be at most 16384 bytes")
        assert s.recv(4096) == b""  # closed
    # the app never saw the request, yet its answer carries the headers every answer does
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "deny"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert "camera=()" in headers["permissions-policy"]
    assert "strict-transport-security" not in headers  # plain HTTP
    assert "server" not in headers
    assert httpx2.get(hardened.url + "/healthz").status_code == 200  # the server serves on


def test_heads_under_the_bound_are_served_on_one_keep_alive_connection(hardened: ServerProcess) -> None:
    # Each request's head is counted afresh: three of 12 KB each on one connection (36 KB in all).
    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + _headers(12) + b"\r\n")
            answer = s.recv(65536)
            answer += _rest_of_answer(s, answer)
            assert _status(answer) == 200, answer[:100]


def test_a_body_sent_with_its_head_is_not_counted_as_head(hardened: ServerProcess) -> None:
    body = json.dumps({"slug": "head-and-body", "name": "x" * 60_000}).encode()  # under the 100 KB limit
    head = (
        b"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + hardened.admin_token.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", _port(hardened)), timeout=10) as s:
        s.sendall(head + body)  # one write: the server reads head and body together
        answer = s.recv(65536)
        answer += _rest_of_answer(s, answer)
    assert _status(answer) in (201, 422), answer[:300]  # created, or refused for its own reasons


def test_rest_rate_limit_answers_429_with_retry_after(hardened: ServerProcess) -> None:
    viewer = make_token(hardened, "viewer", label="busy viewer")
    statuses = []
    retry_after = None
    with httpx2.Client(base_url=hardened.url, headers=auth(viewer)) as client:
        for _ in range(30):  # the bucket holds 5 and refills one a second
            r = client.get("/api/v1/projects")
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after = r.headers["retry-after"]
                assert r.json()["error"]["code"] == "rate_limited"
                assert r.json()["error"]["details"]["retry_after_s"] > 0
                break
    assert statuses[:5] == [200] * 5 and statuses[-1] == 429, statuses
    assert retry_after is not None and int(retry_after) >= 1
    # another credential is not affected
    assert (
        httpx2.get(hardened.url + "/api/v1/projects", headers=auth(hardened.admin_token)).status_code == 200
    )


async def test_mcp_rate_limit_is_a_clear_tool_error(hardened: ServerProcess) -> None:
    viewer = make_token(hardened, "viewer", label="busy agent")
    async with mcp_client(hardened.mcp_url, viewer) as client:
        texts = []
        for _ in range(30):
            result = await client.call_tool("list_agents", {})
            if result.is_error:
                texts.append(await call_error(client, "list_agents"))
                break
        assert texts, "the rate limit never answered"
        assert error_code(texts[0]) == "rate_limited"
        assert "retry in" in texts[0] and "retry_after_s" in texts[0]


def test_mcp_refuses_foreign_hosts_and_origins_and_works_behind_a_proxy(hardened: ServerProcess) -> None:
    headers = {**MCP_HEADERS, **auth(hardened.admin_token)}

    def post(**extra: str) -> httpx2.Response:
        return httpx2.post(hardened.mcp_url, json=INIT, headers={**headers, **extra})

    assert post(Host="evil.example.com").status_code == 421
    assert post(Host="vibe.example.com", Origin="https://evil.example.com").status_code == 403
    # A reverse proxy keeps the public Host and says who the client is and that it spoke HTTPS.
    r = post(
        Host="vibe.example.com",
        Origin="https://vibe.example.com",
        **{"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"]["serverInfo"]["name"]
    assert "strict-transport-security" in r.headers
    # the proxy's client address is what the audit log records
    bad = httpx2.post(
        hardened.mcp_url,
        json=INIT,
        headers={**MCP_HEADERS, "Authorization": "Bearer vibe_" + "N" * 43, "X-Forwarded-For": "203.0.113.5"},
    )
    assert bad.status_code == 401
    entries = httpx2.get(
        hardened.url + "/api/v1/audit", params={"action": "auth.failed"}, headers=auth(hardened.admin_token)
    ).json()["items"]
    assert entries[0]["remote"] == "203.0.113.5"


def test_secrets_stay_out_of_logs_events_audit_and_errors(hardened: ServerProcess) -> None:
    secret = make_token(hardened, "worker", project="default", agent="keeper", label="keeper")
    with httpx2.Client(base_url=hardened.url + "/api/v1") as client:
        r = client.get("/projects", headers=auth(secret + "x"))  # a near miss
        assert r.status_code == 401 and secret not in r.text
        admin = auth(hardened.admin_token)
        dumps = [
            client.get("/events", params={"after": 0, "limit": 1000}, headers=admin).text,
            client.get("/audit", params={"limit": 1000}, headers=admin).text,
            client.get("/tokens", headers=admin).text,
        ]
    for text in dumps:
        assert secret not in text and secret[12:] not in text
        assert hardened.admin_token not in text
    log = hardened.log()
    assert secret not in log and secret[12:] not in log


async def test_failed_logins_from_one_address_are_cut_off(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"VIBE_AUTH_FAILURES_PER_MINUTE": "3"})
    try:
        async with httpx2.AsyncClient(base_url=server.url) as client:
            # no proxy is trusted by default: a rotating X-Forwarded-For is not a new address
            codes = [
                (
                    await client.get(
                        "/api/v1/projects",
                        headers={**auth("vibe_" + "W" * 43), "X-Forwarded-For": f"198.51.100.{i}"},
                    )
                ).status_code
                for i in range(5)
            ]
            r = await client.post("/mcp", json=INIT, headers={**MCP_HEADERS, **auth("vibe_" + "W" * 43)})
            ok = await client.get("/api/v1/projects", headers=auth(server.admin_token))
        assert codes[:3] == [401] * 3 and codes[3:] == [429, 429]
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert ok.status_code == 200  # a valid token is not refused for its neighbours' failures
        entries = httpx2.get(
            server.url + "/api/v1/audit", params={"action": "auth.failed"}, headers=auth(server.admin_token)
        ).json()["items"]
        assert len(entries) == 3  # past the limit, failures are no longer written down
        assert {e["remote"] for e in entries} == {"127.0.0.1"}  # not the forged addresses
    finally:
        server.stop()


def _series(server: ServerProcess, name: str) -> set[str]:
    text = httpx2.get(server.url + "/metrics").text
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith(name + "{")}


def test_random_methods_and_paths_add_no_metric_series(server: ServerProcess) -> None:
    import random
    import string

    rng = random.Random(9)

    targets = ["/healthz", "/api/v1/issues", "/metrics", "/nothing-here"]

    def fire(count: int) -> None:
        with httpx2.Client(base_url=server.url) as client:
            for _ in range(count):
                method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
                path = "/nothing-here/" + "".join(
                    rng.choices(string.ascii_lowercase + "/", k=rng.randint(1, 20))
                )
                client.request(method, rng.choice(targets))
                client.request("GET", path)

    with httpx2.Client(base_url=server.url) as client:  # every series these requests can reach
        for target in targets:
            client.request("RANDOM", target)
            client.get(target)
    before = _series(server, "vibe_http_requests_total") | _series(server, "vibe_http_request_seconds_bucket")
    fire(300)
    after = _series(server, "vibe_http_requests_total") | _series(server, "vibe_http_request_seconds_bucket")
    assert after == before
    assert all('method="other"' in s or 'method="GET"' in s for s in after)
    assert len(after) == len(before)
