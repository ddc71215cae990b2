"""An idle keep-alive connection stays open `VIBE_KEEP_ALIVE_S` between requests, then the server
closes it: set above a proxy's idle timeout, the proxy, not the server, is the one to close it, and
never races a request of its own against the server's close (which it would answer 502)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from vibe_ensemble.ops.config import Settings

from ..support import start_server

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _answer(conn: socket.socket) -> bytes:
    """One whole answer to `REQUEST` (its head and its small body, read until the body is in)."""
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        chunk = conn.recv(65536)
        assert chunk, f"closed mid-answer: {got!r}"
        got += chunk
    return got


def test_an_idle_connection_stays_open_as_long_as_the_setting_says(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"VIBE_KEEP_ALIVE_S": "1"})
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=15) as conn:
            conn.sendall(REQUEST)
            assert _answer(conn).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)  # idle, within the keep-alive: the same connection serves the next request
            conn.sendall(REQUEST)
            assert _answer(conn).startswith(b"HTTP/1.1 200")
            answered = time.monotonic()
            assert conn.recv(1) == b""  # then, idle past it, the server closes the connection
            idle = time.monotonic() - answered
        assert 0.7 < idle < 3.5, idle  # about 1 s: the setting's, not uvicorn's default (5 s)
    finally:
        server.stop()


def test_the_default_outlasts_a_proxys_idle_timeout() -> None:
    # ingress-nginx keeps an idle upstream connection 60 s, AWS load balancers 60 s by default
    assert Settings().keep_alive_s > 60  # type: ignore[call-arg]
