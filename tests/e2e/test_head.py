"""HEAD is answered wherever GET is, with GET's status and headers and no body (uptime checkers),
including on an endless event stream; where there is no GET, HEAD is refused as GET would be."""

from __future__ import annotations

import httpx2

from tests.support import ServerProcess


def test_head_wherever_get(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        for path, headers in [
            ("/", {}),
            ("/healthz", {}),
            ("/readyz", {}),
            ("/metrics", {}),
            ("/login", {}),
            ("/api/v1/projects/default/agents", auth),
            ("/api/v1/projects/default/agents", {}),  # no token: 401 either way
        ]:
            got = http.get(path, headers=headers)
            head = http.head(path, headers=headers)
            assert head.status_code == got.status_code, path
            assert head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
        # An endless stream: the headers come back, and the request ends.
        head = http.head("/api/v1/events/stream", headers=auth)
        assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
        assert head.content == b""
        # No GET here, so no HEAD either.
        assert http.head("/api/v1/projects/default/agents/w1/heartbeat", headers=auth).status_code == 405
