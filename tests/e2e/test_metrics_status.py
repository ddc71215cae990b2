"""/metrics counts an answer by the status the client got: a body cut off at the limit is a 413."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx2

from ..support import start_server


def _count(text: str, status: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vibe_http_requests_total{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_body_over_the_limit_mid_stream_counts_as_413(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"VIBE_MAX_BODY_BYTES": "4096"})
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/json"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit trips mid-body
            yield b'{"title": "'
            for _ in range(16):
                yield b"x" * 1024
            yield b'"}'

        with httpx2.Client(base_url=server.url, headers=headers, timeout=30) as http:
            r = http.post("/api/v1/projects/default/issues", content=chunks())
            assert r.status_code == 413, r.text
            text = http.get("/metrics").text
            # Every answer carries a request id: the client's when it is sane, else a new one.
            assert len(r.headers["x-request-id"]) == 16
            assert (
                http.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
            )
            odd = http.get("/healthz", headers={"X-Request-ID": "a b<script>"}).headers["x-request-id"]
            assert odd != "a b<script>" and len(odd) == 16
            # The routes matched before the app's routers are counted by their own template too, even
            # when answered before the inner app (a refused token on /mcp).
            assert http.get("/readyz").status_code == 200
            assert http.post("/mcp", headers={"Authorization": "Bearer nope"}, json={}).status_code == 401
            probes = http.get("/metrics").text
        # Status labels are classes (a closed set, docs/security.md): the 413 counts as 4xx, never 5xx.
        assert _count(text, "4xx") >= 1
        assert _count(text, "5xx") == 0
        assert re.search(
            r'vibe_http_requests_total\{method="POST",route="/api/v1/projects/\{project\}/issues"', text
        )
        counted = re.findall(
            r'vibe_http_requests_total\{method="(\w+)",route="([^"]+)",status="(\w+)"\} (\S+)', probes
        )
        seen = {(m, r, s): float(v) for m, r, s, v in counted}
        assert seen[("GET", "/healthz", "2xx")] == 2
        assert seen[("GET", "/readyz", "2xx")] >= 1  # the test's start-up polled it too
        assert seen[("POST", "/mcp", "4xx")] == 1
        assert 'route="unmatched"' not in probes
    finally:
        server.stop()
