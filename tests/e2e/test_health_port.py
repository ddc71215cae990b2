"""Liveness on a port of its own (VIBE_HEALTH_PORT, ops/health.py): answered beside the event loop,
503 while the loop is wedged, and a lone server refuses a health port someone else holds."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx2

from tests.support import free_port, serve_refused, start_server
from vibe_ensemble.ops.health import HealthListener


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
