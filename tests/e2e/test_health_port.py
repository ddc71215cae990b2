"""Liveness on a port of its own (VIBE_HEALTH_PORT, ops/health.py): answered beside the event loop,
503 while the loop is wedged, and a lone server refuses a health port someone else holds."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.support import free_port, serve_refused, start_server
from vibe_ensemble.ops.health import HEALTH_THREADS, SWITCH_INTERVAL_S, HealthListener


def _get(url: str) -> tuple[int, dict[str, object]]:
    answer = httpx2.get(url, timeout=5)
    return answer.status_code, answer.json()


def test_the_server_answers_liveness_on_its_health_port(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, extra_env={"VIBE_HEALTH_PORT": str(port)})
    try:
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body["status"] == "ok"
        head = httpx2.head(f"http://127.0.0.1:{port}/healthz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["cache-control"] == "no-store"
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 404  # nothing else is served there
        # A second server on the same health port refuses to start, before it creates anything.
        data = tmp_path / "second"
        done = serve_refused(data, "--migrate", VIBE_HEALTH_PORT=str(port))
        assert done.returncode == 2, done.stdout + done.stderr
        assert "VIBE_HEALTH_PORT" in done.stderr and "admin token" not in done.stdout
        assert not (data / "vibe.db").exists()
    finally:
        server.stop()


async def test_a_wedged_loop_is_reported_while_it_is_wedged() -> None:
    listener = HealthListener("127.0.0.1", 0, stall_s=0.3)
    listener.start()
    url = f"http://127.0.0.1:{listener.port}/healthz"
    try:
        assert (await asyncio.to_thread(_get, url))[0] == 200
        during: list[tuple[int, dict[str, object]]] = []

        def probe_once_stalled() -> None:
            while listener.heartbeat.age() < 0.4:  # past stall_s, as the loop cannot touch it now
                time.sleep(0.01)
            during.append(_get(url))

        prober = threading.Thread(target=probe_once_stalled)
        prober.start()
        prober.join(timeout=30)  # on the loop: it is wedged until the probe has been answered
        assert during and during[0][0] == 503 and during[0][1]["status"] == "stalled"
        async with asyncio.timeout(5):  # the loop runs again, and its heartbeat with it
            while listener.heartbeat.age() >= 0.3:
                await asyncio.sleep(0.01)
        assert (await asyncio.to_thread(_get, url))[0] == 200
    finally:
        await listener.stop()


async def test_the_loop_lets_the_answering_thread_in_sooner_while_the_port_is_served() -> None:
    """The interpreter's switch interval: how long the loop's thread keeps the GIL while the probe's
    thread waits for it. Shortened while the port is served, given back when it stops."""
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_S  # Python's default, 5 ms
    listener = HealthListener("127.0.0.1", 0, stall_s=5)
    listener.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{listener.port}/healthz"))[0] == 200
    finally:
        await listener.stop()
    assert sys.getswitchinterval() == before


async def test_clients_that_send_nothing_do_not_hold_up_a_probe() -> None:
    """One thread answered one connection at a time, each idle one for up to REQUEST_TIMEOUT_S (2 s):
    five connections that sent nothing held a probe for ten seconds, past a kubelet's 3 s timeout,
    and the pod was restarted. Each connection has its own thread now, within a bound: the probe is
    answered while the idle ones are still open, and connections past the bound are dropped at once."""
    import select
    import socket

    listener = HealthListener("127.0.0.1", 0, stall_s=5)
    listener.start()
    idle = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(5)]
    try:
        answer = await asyncio.to_thread(
            httpx2.get, f"http://127.0.0.1:{listener.port}/healthz", timeout=1.5
        )  # under one idle connection's 2 s: answered beside them, not after
        assert answer.status_code == 200
        crowd = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(HEALTH_THREADS + 5)]
        try:  # past the bound, connections are closed by the server at once, not queued for threads
            closed: set[socket.socket] = set()
            deadline = time.monotonic() + 1.0  # under REQUEST_TIMEOUT_S: those given a thread stay open
            while time.monotonic() < deadline and len(closed) < 10:
                readable, _, _ = select.select([c for c in crowd if c not in closed], [], [], 0.05)
                closed.update(c for c in readable if c.recv(1) == b"")
            assert 1 <= len(closed) <= len(crowd) - (HEALTH_THREADS - len(idle))
        finally:
            for conn in crowd:
                conn.close()
    finally:
        for conn in idle:
            conn.close()
        await listener.stop()


async def test_a_client_gone_before_its_answer_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """A probe that resets its connection before the answer (a kubelet timing out) printed a
    BrokenPipe/ConnectionReset traceback per connection in the server's log; it is nothing to report."""
    import socket
    import struct

    listener = HealthListener("127.0.0.1", 0, stall_s=5)
    listener.start()
    try:
        for _ in range(10):
            conn = socket.create_connection(("127.0.0.1", listener.port))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            conn.close()
        answer = await asyncio.to_thread(httpx2.get, f"http://127.0.0.1:{listener.port}/healthz", timeout=5)
        assert answer.status_code == 200  # served on, and every reset connection handled before it
    finally:
        await listener.stop()
    assert "Traceback" not in capfd.readouterr().err


async def test_a_client_trickling_its_request_head_is_dropped_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REQUEST_TIMEOUT_S bounded each read, not the head: a client sending a header line every
    fraction of it held its thread for as long as it kept sending (HEALTH_THREADS such clients, and
    every slow probe after them was closed unanswered). The whole head must now arrive within
    REQUEST_TIMEOUT_S of the thread's start; a slow but whole one is still answered."""
    import select
    import socket

    from vibe_ensemble.ops import health

    monkeypatch.setattr(health, "REQUEST_TIMEOUT_S", 0.6)
    listener = HealthListener("127.0.0.1", 0, stall_s=5)
    listener.start()
    try:
        slow = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", listener.port))
        trickler = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", listener.port))
        try:

            def converse() -> tuple[bytes, float | None]:
                """Both send a first line; the slow one then ends its head, the trickler never does:
                a header line every 0.1 s (each read well within the old per-read bound), for 3 s."""
                started = time.monotonic()
                for conn in (slow, trickler):
                    conn.sendall(b"GET /healthz HTTP/1.1\r\n")
                time.sleep(0.2)  # past INLINE_WAIT_S: both are on threads now
                slow.sendall(b"Host: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"}"):
                    chunk = slow.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                dropped_at = None
                while time.monotonic() - started < 3.0:
                    try:
                        trickler.sendall(b"X-Pad: 1\r\n")
                    except OSError:  # reset: the server closed it
                        dropped_at = time.monotonic() - started
                        break
                    readable, _, _ = select.select([trickler], [], [], 0.1)
                    if readable and trickler.recv(1) == b"":
                        dropped_at = time.monotonic() - started
                        break
                return answer, dropped_at

            answer, dropped_at = await asyncio.to_thread(converse)
        finally:
            slow.close()
            trickler.close()
        assert answer.startswith(b"HTTP/1.0 200") and b'"status": "ok"' in answer
        assert dropped_at is not None, "the trickling client was never dropped"
        assert dropped_at < 3.0  # at its deadline (0.6 s after its thread started), not when it stopped
    finally:
        await listener.stop()
