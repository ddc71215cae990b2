"""deployment/scripts, each run for real: against a real local server, a real database, real files."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.support import ServerProcess, start_server
from vibe_ensemble.ops.config import Settings

from .support import BIN, ROOT, SCRIPTS

VALIDATE = SCRIPTS / "validate-deployment.sh"
SECRETS = SCRIPTS / "generate-secrets.sh"


def run(
    argv: list[str | Path], env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, env=full_env, **kw
    )


# --- validate-deployment.sh ---------------------------------------------------------------------

# a server starts in about 2 s on an idle machine; these machines are shared and often far from idle
READY_TIMEOUT = 120


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `vibe-ensemble serve` on SQLite and a free loopback port."""
    proc = start_server(tmp_path, ready_timeout=READY_TIMEOUT)
    try:
        yield proc
    finally:
        proc.stop()


def test_validate_deployment_passes_against_a_real_server(server: ServerProcess) -> None:
    result = run([VALIDATE, server.url], env={"VIBE_TOKEN": server.admin_token, "SAMPLES": "5"})
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")]
    checks = {line.split()[1] for line in lines if line.startswith("ok")}
    assert checks == {"health", "readiness", "auth", "headers", "metrics", "mcp", "latency"}
    assert "ok    auth       POST /mcp with a wrong token: 401" in lines  # as the runbook says
    assert lines[-1] == f"all checks passed against {server.url}"


def test_validate_deployment_scrapes_metrics_with_the_metrics_token(tmp_path: Path) -> None:
    metrics_token = secrets.token_urlsafe(32)
    server = start_server(
        tmp_path, extra_env={"VIBE_METRICS_TOKEN": metrics_token}, ready_timeout=READY_TIMEOUT
    )
    try:
        env = {"VIBE_TOKEN": server.admin_token, "SAMPLES": "2"}
        without = run([VALIDATE, server.url], env=env)
        assert without.returncode == 1
        assert "FAIL  metrics    GET /metrics answered 401: set VIBE_METRICS_TOKEN" in without.stdout
        passed = run([VALIDATE, server.url], env={**env, "VIBE_METRICS_TOKEN": metrics_token})
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "ok    metrics    GET /metrics 200 with vibe_http_requests_total" in passed.stdout
    finally:
        server.stop()


class _OpenHandler(BaseHTTPRequestHandler):
    """Answers every request 200 with a health-like body: a server that enforces nothing."""

    def _answer(self) -> None:
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_validate_deployment_fails_against_a_server_without_auth() -> None:
    """(`VIBE_AUTH_ENABLED=false` does not turn authentication off, so a plain HTTP server stands in.)"""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OpenHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        result = run([VALIDATE, url], env={"VIBE_TOKEN": "vibe_anything", "SAMPLES": "2"})
    finally:
        httpd.shutdown()
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert "ok    health     GET /healthz 200" in lines
    assert len([line for line in lines if line.startswith("FAIL  auth")]) == 4, result.stdout
    for check in ("readiness", "headers", "metrics", "mcp"):
        assert any(line.startswith(f"FAIL  {check}") for line in lines), check


def test_validate_deployment_fails_with_a_wrong_token(server: ServerProcess) -> None:
    result = run([VALIDATE, server.url], env={"VIBE_TOKEN": "vibe_wrong", "SAMPLES": "2"})
    assert result.returncode == 1
    assert "FAIL  mcp" in result.stdout


def test_validate_deployment_fails_when_nothing_answers() -> None:
    result = run([VALIDATE, "http://127.0.0.1:9"], env={"VIBE_TOKEN": "vibe_x", "SAMPLES": "1"})
    assert result.returncode == 1
    assert "FAIL  health" in result.stdout and "FAIL  readiness" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {"VIBE_TOKEN": "x"}, "Checks a running Vibe Ensemble"),
        (["ftp://x"], {"VIBE_TOKEN": "x"}, "URL must start with http"),
        (["http://127.0.0.1:9"], {"VIBE_TOKEN": ""}, "set VIBE_TOKEN"),
        (["http://127.0.0.1:9"], {"VIBE_TOKEN": "x", "SAMPLES": "0"}, "SAMPLES must be a positive integer"),
    ],
)
def test_validate_deployment_usage_errors(args: list[str], env: dict[str, str], message: str) -> None:
    result = run([VALIDATE, *args], env=env)
    assert result.returncode == 2 and message in result.stderr


# --- generate-secrets.sh ------------------------------------------------------------------------


def secret_values(path: Path) -> dict[str, str]:
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "Secret" and doc["metadata"]["name"] == "vibe-ensemble-secrets"
    values: dict[str, str] = doc["stringData"]
    return values


def test_generate_secrets_writes_a_private_random_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run([SECRETS, "production"], env={"SECRETS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    path = tmp_path / "production.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = secret_values(path)
    generated = ("VIBE_REQUEST_STATE_KEY", "VIBE_SESSION_SECRET", "VIBE_METRICS_TOKEN")
    assert set(values) == {"VIBE_DATABASE_URL", *generated}
    for key in generated:
        assert len(values[key]) == 64 and len(set(values[key])) > 20, key
    assert len({values[key] for key in generated}) == len(generated)
    # the server accepts them for production
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIBE_PROFILE", "production")
    monkeypatch.setenv("VIBE_REPLICAS", "3")
    assert Settings().unsafe_reasons() == []
    # a second run refuses to overwrite; --force replaces every value
    again = run([SECRETS, "production"], env={"SECRETS_DIR": str(tmp_path)})
    assert again.returncode == 1 and "--force" in again.stderr
    assert secret_values(path) == values
    forced = run([SECRETS, "production", "--force"], env={"SECRETS_DIR": str(tmp_path)})
    assert forced.returncode == 0
    fresh = secret_values(path)
    assert all(fresh[k] != values[k] for k in values)


def test_generate_secrets_uses_a_given_database_url(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://vibe:pw@db.example:5432/vibe"
    result = run([SECRETS, "staging"], env={"SECRETS_DIR": str(tmp_path), "DATABASE_URL": url})
    assert result.returncode == 0
    assert secret_values(tmp_path / "staging.yaml")["VIBE_DATABASE_URL"] == url


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["prod"], {}, "ENV must be staging or production"),
        (["staging", "--yes"], {}, "unknown option"),
        (["staging"], {"DATABASE_URL": "sqlite+aiosqlite:///x.db"}, "must be postgresql+asyncpg"),
        (["staging"], {"DATABASE_URL": 'postgresql+asyncpg://a:"b@h/d'}, "must not contain"),
    ],
)
def test_generate_secrets_refuses_bad_input(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run([SECRETS, *args], env={"SECRETS_DIR": str(tmp_path), **env})
    assert result.returncode == 2 and message in result.stderr
    assert not list(tmp_path.iterdir()), "nothing is written on bad input"


def test_generated_secrets_are_git_ignored() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", "deployment/secrets/production.yaml"], cwd=ROOT, check=False
    )
    assert result.returncode == 0, "deployment/secrets/ must be git-ignored"


# --- database-restore.sh ------------------------------------------------------------------------


def test_database_restore_usage() -> None:
    result = run([SCRIPTS / "database-restore.sh"])
    assert result.returncode == 2 and "vibe-ensemble backup restore" in result.stderr
    assert sys.executable


# --- database-restore.sh against the real backup commands -----------------------------------------

RESTORE = SCRIPTS / "database-restore.sh"


def _cli() -> str:
    cli = os.environ.get("VIBE_ENSEMBLE", str(BIN / "vibe-ensemble"))
    probe = run([cli, "backup", "--help"])
    assert probe.returncode == 0, probe.stderr
    return cli


def _labels(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "vibe.db") as db:
        return sorted(row[0] for row in db.execute("SELECT label FROM credentials"))


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[str, dict[str, str], Path, str]:
    """A SQLite database with one token, a backup of it, then a second token written after the backup."""
    cli = _cli()
    env = {"VIBE_DATA_DIR": str(tmp_path / "data")}
    store = tmp_path / "backups"
    for argv in ([cli, "migrate"], [cli, "token", "create", "--role", "viewer", "--label", "before"]):
        assert run(argv, env=env).returncode == 0
    created = run([cli, "backup", "create", "--to", str(store), "--label", "daily"], env=env)
    assert created.returncode == 0, created.stderr
    backup_id = created.stdout.strip().splitlines()[-1]
    assert run([cli, "token", "create", "--role", "viewer", "--label", "after"], env=env).returncode == 0
    assert _labels(tmp_path / "data") == ["after", "before"]
    return cli, env, store, backup_id


def test_database_restore_restores_and_keeps_a_safety_backup(
    tmp_path: Path, backed_up: tuple[str, dict[str, str], Path, str]
) -> None:
    cli, env, store, backup_id = backed_up
    result = run([RESTORE, backup_id, "--store", store, "--yes"], env={**env, "VIBE_ENSEMBLE": cli})
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("== ")] == [
        f"== 1/5 verify backup {backup_id}",
        "== 2/5 confirm",
        "== 3/5 stop the servers",
        "== 4/5 restore",
        "== 5/5 check",
    ]
    assert _labels(tmp_path / "data") == ["before"]
    # the state it replaced is kept: a pre-restore safety backup beside the one restored
    listing = json.loads(run([cli, "backup", "list", "--store", str(store), "--json"], env=env).stdout)
    assert len(listing) == 2 and backup_id in {b["id"] for b in listing}


def test_database_restore_refuses_a_backup_that_does_not_verify(
    tmp_path: Path, backed_up: tuple[str, dict[str, str], Path, str]
) -> None:
    cli, env, store, backup_id = backed_up
    (data,) = [p for p in store.iterdir() if p.name.startswith(backup_id) and not p.name.endswith(".json")]
    data.write_bytes(data.read_bytes()[:-64] + b"\0" * 64)
    result = run([RESTORE, backup_id, "--store", store, "--yes"], env={**env, "VIBE_ENSEMBLE": cli})
    assert result.returncode != 0
    assert "== 4/5 restore" not in result.stdout
    assert _labels(tmp_path / "data") == ["after", "before"], "nothing changed"


def test_database_restore_asks_before_it_restores(
    tmp_path: Path, backed_up: tuple[str, dict[str, str], Path, str]
) -> None:
    cli, env, store, backup_id = backed_up
    result = run(
        [RESTORE, backup_id, "--store", store], env={**env, "VIBE_ENSEMBLE": cli}, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2 and "pass --yes" in result.stderr
    assert _labels(tmp_path / "data") == ["after", "before"], "nothing changed"
