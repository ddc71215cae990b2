"""The production profile refuses unsafe settings (a real `vibe-ensemble serve` process) and says
what to fix; safe settings start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from ..support import free_port, run_cli, start_server


def _serve(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "VIBE_PROFILE": "production",
        "VIBE_DATA_DIR": str(tmp_path / "data"),
        "VIBE_PORT": str(free_port()),
        **env,
    }
    for secret in ("VIBE_REQUEST_STATE_KEY", "VIBE_SESSION_SECRET", "VIBE_METRICS_TOKEN"):
        if secret not in env:
            full.pop(secret, None)
    return run_cli(
        [sys.executable, "-m", "vibe_ensemble.cli", *(command or ("serve", "--migrate"))], env=full
    )


def test_production_refuses_every_unsafe_setting_at_once(tmp_path: Path) -> None:
    run = _serve(tmp_path, VIBE_REPLICAS="2")
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert "refusing to start in production" in err
    assert "VIBE_REQUEST_STATE_KEY is the default" in err
    assert "VIBE_SESSION_SECRET is unset or shorter than 32 characters" in err
    assert "VIBE_METRICS_TOKEN is unset or shorter than 32 characters" in err
    assert "set VIBE_DATABASE_URL to PostgreSQL" in err
    assert not (tmp_path / "data" / "vibe.db").exists()  # refused before touching anything


@pytest.mark.parametrize("profile", ["production", "development"])
def test_authentication_cannot_be_turned_off(tmp_path: Path, profile: str) -> None:
    run = _serve(tmp_path, VIBE_AUTH_ENABLED="false", VIBE_PROFILE=profile)
    assert run.returncode == 2
    assert "VIBE_AUTH_ENABLED is not a setting: authentication is always on" in " ".join(run.stderr.split())
    assert not (tmp_path / "data" / "vibe.db").exists()


def test_stdio_mcp_refuses_unsafe_production_settings_too(tmp_path: Path) -> None:
    run = _serve(tmp_path, "mcp", "--token", "vibe_" + "x" * 43, VIBE_REPLICAS="2")
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert "refusing to start in production" in err
    assert "VIBE_SESSION_SECRET is unset or shorter than 32 characters" in err
    assert "set VIBE_DATABASE_URL to PostgreSQL" in err
    assert not (tmp_path / "data" / "vibe.db").exists()


def test_production_refuses_a_short_secret_without_printing_it(tmp_path: Path) -> None:
    run = _serve(tmp_path, VIBE_REQUEST_STATE_KEY="hunter2-hunter2", VIBE_SESSION_SECRET="swordfish-42")
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert "VIBE_REQUEST_STATE_KEY is the default or shorter than 32 characters" in err
    assert "VIBE_SESSION_SECRET is unset or shorter than 32 characters" in err
    assert "hunter2" not in run.stdout + run.stderr
    assert "swordfish" not in run.stdout + run.stderr


def test_production_refuses_a_long_but_guessable_secret(tmp_path: Path) -> None:
    # 32 x "a" once forged a dashboard session
    run = _serve(tmp_path, VIBE_REQUEST_STATE_KEY="a" * 32, VIBE_SESSION_SECRET="a" * 32)
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert "VIBE_SESSION_SECRET looks guessable" in err and "openssl rand -hex 32" in err
    assert "VIBE_REQUEST_STATE_KEY looks guessable" in err
    assert "a" * 32 not in run.stdout + run.stderr


def test_production_starts_with_safe_settings(tmp_path: Path) -> None:
    metrics_token = secrets.token_urlsafe(32)
    server = start_server(
        tmp_path,
        extra_env={
            "VIBE_PROFILE": "production",
            "VIBE_REQUEST_STATE_KEY": secrets.token_urlsafe(32),
            "VIBE_SESSION_SECRET": secrets.token_urlsafe(32),
            "VIBE_METRICS_TOKEN": metrics_token,
        },
    )
    try:
        assert httpx2.get(server.url + "/readyz").status_code == 200
        assert httpx2.get(server.url + "/api/v1/projects").status_code == 401
        assert httpx2.get(server.url + "/metrics").status_code == 401
        scraped = httpx2.get(server.url + "/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
        assert scraped.status_code == 200
    finally:
        server.stop()
