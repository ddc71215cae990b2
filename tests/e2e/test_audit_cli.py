"""`vibe-ensemble audit`: the operator reads the audit log from the command line; no token in it."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import run_cli


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path)}
    run = run_cli([sys.executable, "-m", "vibe_ensemble.cli", *args], env=env)
    assert run.returncode == 0, run.stderr
    return run


def test_cli_token_changes_show_in_the_audit_command(tmp_path: Path) -> None:
    _cli(tmp_path, "migrate")
    secret = _cli(tmp_path, "token", "create", "--role", "worker", "--label", "ci bot").stdout.strip()
    assert secret.startswith("vibe_")
    _cli(tmp_path, "token", "revoke", "1")

    lines = _cli(tmp_path, "audit", "--json").stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["action"] for e in entries] == ["token.revoked", "token.created"]
    assert {e["actor"] for e in entries} == {"token:cli"}
    assert {e["remote"] for e in entries} == {f"cli:{getpass.getuser()}@{socket.gethostname()}"}
    assert entries[1]["details"]["label"] == "ci bot"

    table = _cli(tmp_path, "audit", "--action", "token.*", "--limit", "5").stdout
    assert "token.created" in table and "token.revoked" in table
    assert secret not in table + "\n".join(lines)
    assert _cli(tmp_path, "audit", "--action", "auth.*", "--json").stdout == ""


def test_the_audit_table_shows_stored_text_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    _cli(tmp_path, "migrate")
    label = "[/][red]x\x1b[2J\x1b]0;pwned\x07[bold]"
    with pytest.raises(AssertionError, match="label: must be one line without control characters"):
        _cli(tmp_path, "token", "create", "--role", "viewer", "--label", label)  # refused today…
    _cli(tmp_path, "token", "create", "--role", "viewer", "--label", "[/][red]x[bold]")
    db = sqlite3.connect(tmp_path / "vibe.db")  # …but a row written before may hold it
    with db:
        db.execute("UPDATE credentials SET label = ?", (label,))
        db.execute("UPDATE audit_log SET details = json_set(details, '$.label', ?)", (label,))
    db.close()
    table = _cli(tmp_path, "audit", "--action", "token.*").stdout
    assert "\x1b" not in table and "\x07" not in table
    assert "[/][red]x\\x1b[2J" in "".join(table.split())  # shown as written, never as markup
    listed = _cli(tmp_path, "token", "list").stdout
    assert "\x1b" not in listed and "[/][red]x" in "".join(listed.split())


def test_a_time_not_iso_8601_or_without_a_timezone_or_an_unknown_outcome_is_one_line(tmp_path: Path) -> None:
    _cli(tmp_path, "migrate")
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path)}
    for args, said in (
        (("--since", "2026-12-02"), "error: since: must include a timezone, e.g. 2030-01-31T12:00:00Z"),
        (("--since", "2026-12-02T10:00:00"), "error: since: must include a timezone"),
        (
            ("--since", "yesterday"),
            "error: since: must be an ISO 8601 time with a timezone, e.g. 2030-01-31T12:00:00Z "
            "(got 'yesterday')",
        ),
        (("--outcome", "bogus"), "error: outcome: must be one of ok, denied, failed (got 'bogus')"),
    ):
        run = run_cli([sys.executable, "-m", "vibe_ensemble.cli", "audit", *args], env=env)
        assert run.returncode == 1, args
        assert run.stderr.startswith(said), run.stderr
        assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1
    assert _cli(tmp_path, "audit", "--since", "2026-12-02T10:00:00+02:00", "--json").stdout == ""
