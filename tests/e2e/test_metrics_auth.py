"""Who may read /metrics, on real servers: with VIBE_METRICS_TOKEN only that bearer token (any Host,
as Prometheus scrapes pods by IP address); without it, anyone on a loopback-only server, through the
Host check like every route, and nobody on any other server."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from ..support import ServerProcess, free_port, launch, serving, start_server

EVIL = "evil.example.com"
METRICS_TOKEN = secrets.token_urlsafe(32)
ALLOWED = json.dumps(["vibe.example.com", "127.0.0.1:*"])


def _get(server: ServerProcess, host: str | None = None, token: str | None = None) -> httpx2.Response:
    headers = {"Host": host} if host else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.get(server.url + "/metrics", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"VIBE_METRICS_TOKEN": METRICS_TOKEN, "VIBE_ALLOWED_HOSTS": ALLOWED}
    yield from serving(tmp_path_factory.mktemp("guarded"), extra_env=env)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default: 127.0.0.1, no VIBE_ALLOWED_HOSTS, no VIBE_METRICS_TOKEN."""
    yield from serving(tmp_path_factory.mktemp("open"))


def test_with_a_token_no_token_and_a_wrong_one_are_refused(guarded: ServerProcess) -> None:
    for token in (None, "wrong", METRICS_TOKEN[:-1], guarded.admin_token):
        refused = _get(guarded, token=token)
        assert refused.status_code == 401, (token, refused.text)
        assert refused.headers["www-authenticate"].startswith("Bearer ")
        assert refused.json()["error"]["code"] == "unauthenticated"
        assert "VIBE_METRICS_TOKEN" in refused.json()["error"]["message"]
        assert "vibe_http_requests_total" not in refused.text
    # a wrong token is not mistaken for a missing one
    assert 'error="invalid_token"' in _get(guarded, token="wrong").headers["www-authenticate"]
    assert "error=" not in _get(guarded).headers["www-authenticate"]


def test_with_the_token_any_host_is_answered(guarded: ServerProcess) -> None:
    for host in (None, "vibe.example.com", EVIL, "10.1.2.3:8080"):
        served = _get(guarded, host, METRICS_TOKEN)
        assert served.status_code == 200, (host, served.text)
        assert "vibe_http_requests_total" in served.text
        assert _get(guarded, host).status_code == 401, host


def test_without_a_token_a_loopback_server_answers_loopback_names_only(loopback: ServerProcess) -> None:
    port = loopback.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        served = _get(loopback, host)
        assert served.status_code == 200, (host, served.text)
        assert "vibe_http_requests_total" in served.text
    for host in (EVIL, "10.1.2.3:8080", f"localhost.{EVIL}:{port}"):
        refused = _get(loopback, host)
        assert refused.status_code == 421, (host, refused.text)
        assert refused.json()["error"]["code"] == "misdirected_request"


def test_without_a_token_a_server_serving_other_names_refuses(tmp_path: Path) -> None:
    named = start_server(tmp_path, extra_env={"VIBE_ALLOWED_HOSTS": ALLOWED})
    try:
        assert _get(named, EVIL).status_code == 421
        refused = _get(named, "vibe.example.com", named.admin_token)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "permission_denied"
        assert "set VIBE_METRICS_TOKEN" in refused.json()["error"]["message"]
    finally:
        named.stop()


def test_without_a_token_a_server_beyond_loopback_refuses(tmp_path: Path) -> None:
    """Listening on 127.0.0.2 counts as beyond loopback (only 127.0.0.1, localhost and ::1 do not),
    and without VIBE_ALLOWED_HOSTS such a server checks no Host at all: /metrics is still refused."""
    port = free_port()
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path / "data"), "VIBE_HOST": "127.0.0.2"}
    env.update({"VIBE_PORT": str(port)})
    env.pop("VIBE_METRICS_TOKEN", None)
    env.pop("VIBE_ALLOWED_HOSTS", None)
    argv = [sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate"]
    server = launch(argv, env, tmp_path / "server.log", f"http://127.0.0.2:{port}")
    try:
        refused = _get(server, "127.0.0.2")
        assert refused.status_code == 403, refused.text
        assert "set VIBE_METRICS_TOKEN" in refused.json()["error"]["message"]
        assert httpx2.get(server.url + "/healthz").status_code == 200
    finally:
        server.stop()
