"""The command line as a person meets it: every expected failure is one line on stderr and a non-zero
exit (never a traceback), every listing takes --json, and a table in a pipe is never cut."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, run_cli

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


def bare_env(home: Path) -> dict[str, str]:
    """No VIBE_ settings and no COLUMNS: what a fresh shell (or a script's pipe) gives the command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_") and k != "COLUMNS"}
    return {**env, "HOME": str(home), "XDG_DATA_HOME": str(home / "share")}


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli([CLI, *args], env=bare_env(home), cwd=home)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *expected: str) -> str:
    """The failure is exactly one stderr line starting `error:` with each expected phrase, and `code`."""
    lines = done.stderr.splitlines()
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines
    for phrase in expected:
        assert phrase in lines[0], lines[0]
    return lines[0]


# Each command that opens the database, with what it needs besides --database-url.
DATABASE_COMMANDS = [
    ["token", "list"],
    ["token", "list", "--json"],
    ["token", "create", "--role", "admin"],
    ["token", "revoke", "1"],
    ["audit"],
    ["migrate"],
    ["backup", "list"],
    ["connect", "claude-code", "--dry-run"],
]


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: " ".join(a))
def test_an_unparseable_database_url_is_one_line_naming_a_valid_one(tmp_path: Path, args: list[str]) -> None:
    done = cli(tmp_path, *args, "--database-url", "not a url at all")
    one_line_error(done, 2, "cannot parse the database URL", "sqlite:///")
    assert "postgresql://user:password@host:5432/dbname" in done.stderr


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: " ".join(a))
def test_an_unsupported_database_is_one_line(tmp_path: Path, args: list[str]) -> None:
    done = cli(tmp_path, *args, "--database-url", "mysql://u:secret@db.example/app")
    line = one_line_error(done, 2, "unsupported database 'mysql'")
    assert "secret" not in line


@pytest.mark.parametrize(
    "args", [a for a in DATABASE_COMMANDS if a[0] != "backup"], ids=lambda a: " ".join(a)
)
def test_an_unreachable_postgresql_is_one_line(tmp_path: Path, args: list[str]) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # a port nothing listens on
    done = cli(tmp_path, *args, "--database-url", nobody)
    one_line_error(done, 1, "cannot reach the database", "Connect call failed", "--database-url")


SQLITE_COMMANDS = [a for a in DATABASE_COMMANDS if a[0] != "backup"]


@pytest.mark.parametrize("args", SQLITE_COMMANDS, ids=lambda a: " ".join(a))
def test_a_sqlite_file_that_cannot_be_opened_is_named_with_what_to_check(
    tmp_path: Path, args: list[str]
) -> None:
    """The file is there but SQLite cannot open it. A directory in its place does that for every
    user: root reads a chmod 000 file, and the test must fail without the hint whoever runs it."""
    path = tmp_path / "vibe.db"
    path.mkdir()
    done = cli(tmp_path, *args, "--database-url", f"sqlite:///{path}")
    line = one_line_error(done, 1, f"cannot open the SQLite database {path} (unable to open database file)")
    assert "may read and write it and its directory" in line and "--database-url" in line
    assert "is it running" not in line  # a hint for a database server, not for a file


# Each command that reads the settings, as a person runs it.
SETTINGS_COMMANDS = [
    *DATABASE_COMMANDS,
    ["serve"],
    ["mcp"],
    ["backup", "create"],
]


@pytest.mark.parametrize("args", SETTINGS_COMMANDS, ids=lambda a: " ".join(a))
@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "VIBE_PORT",
            "abc",
            "port (VIBE_PORT): Input should be a valid integer, unable to parse string as an integer "
            "(got 'abc')",
        ),
        (
            "VIBE_OFFLINE_AFTER_S",
            "-5",
            "offline_after_s (VIBE_OFFLINE_AFTER_S): Input should be greater than 0",
        ),
        ("VIBE_ALLOWED_HOSTS", "a.example", "allowed_hosts (VIBE_ALLOWED_HOSTS): not valid JSON"),
    ],
    ids=["port", "offline_after_s", "allowed_hosts"],
)
def test_an_invalid_setting_is_one_line_naming_it_and_the_rule(
    tmp_path: Path, args: list[str], variable: str, value: str, expected: str
) -> None:
    env = {**bare_env(tmp_path), variable: value, "VIBE_TOKEN": "vibe_" + "x" * 43}
    done = run_cli([CLI, *args], env=env, cwd=tmp_path)
    line = one_line_error(done, 2, f"error: invalid settings: {expected}")
    assert "pydantic" not in line and "\\n" not in line and "validation error" not in line


def test_a_secret_setting_is_named_but_its_value_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "vibe.toml"
    config.write_text("session_secret = 12345678901234567890123456789012\n")  # a number, not text
    done = cli(tmp_path, "token", "list", "--config", str(config))
    line = one_line_error(done, 2, "session_secret (VIBE_SESSION_SECRET): Input should be a valid string")
    assert "1234567890" not in line


@pytest.mark.parametrize(
    ("setting", "value", "refusal"),
    [
        ("VIBE_REPLICAS", "3", "SQLite cannot serve several replicas"),
        ("VIBE_SESSION_SECRET", "short", "VIBE_SESSION_SECRET is unset or shorter than 32 characters"),
    ],
    ids=["replicas", "short-secret"],
)
def test_serve_in_production_refuses_bad_settings_before_a_missing_database(
    tmp_path: Path, setting: str, value: str, refusal: str
) -> None:
    """No database yet and a configuration production refuses: the refusal is what `serve` says (it
    said `no database at …: start the server once`, which would not have helped)."""
    secrets = {
        k: "Zq8" + os.urandom(24).hex()
        for k in ("VIBE_REQUEST_STATE_KEY", "VIBE_SESSION_SECRET", "VIBE_METRICS_TOKEN")
    }
    env = {
        **bare_env(tmp_path),
        "VIBE_PROFILE": "production",
        "VIBE_DATA_DIR": str(tmp_path / "data"),
        **secrets,
    }
    env[setting] = value
    done = run_cli([CLI, "serve", "--port", str(free_port())], env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "refusing to start in production" in done.stderr and refusal in done.stderr, done.stderr
    assert "no database at" not in done.stderr


def test_serve_on_a_sqlite_file_that_cannot_be_opened_names_it(tmp_path: Path) -> None:
    path = tmp_path / "vibe.db"
    path.mkdir()
    for migrate in ([], ["--migrate"]):
        args = ["serve", *migrate, "--port", str(free_port()), "--database-url", f"sqlite:///{path}"]
        done = cli(tmp_path, *args)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"error: cannot open the SQLite database {path} "), done.stderr


def test_a_damaged_sqlite_file_is_one_line_saying_to_restore_a_backup(tmp_path: Path) -> None:
    """A truncated copy (its schema pages kept, the rest gone): SQLite says it is malformed at the
    first look, which printed a ~470-line traceback before."""
    db = tmp_path / "vibe.db"
    url = f"sqlite:///{db}"
    assert cli(tmp_path, "migrate", "--database-url", url).returncode == 0
    db.write_bytes(db.read_bytes()[:8192])
    for args in (("token", "list"), ("serve", "--port", str(free_port()))):
        done = cli(tmp_path, *args, "--database-url", url)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "│" not in done.stderr, done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"error: the SQLite file {db} is damaged ("), last
        assert "vibe-ensemble backup restore" in last
    doctor = cli(tmp_path, "doctor", "--json", "--database-url", url)
    (finding,) = [f for f in json.loads(doctor.stdout)["checks"] if f["check"] == "database"]
    assert finding["status"] == "fail" and "is damaged" in finding["detail"], finding
    assert "backup restore" in finding["fix"], finding  # not "start the database"


def test_serve_on_an_unreachable_postgresql_says_so_in_a_line(tmp_path: Path) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    done = cli(tmp_path, "serve", "--port", str(free_port()), "--database-url", nobody)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "│" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: cannot reach the database"), done.stderr


def test_doctor_on_an_unreachable_database_prints_its_table_and_no_log(tmp_path: Path) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    done = cli(tmp_path, "doctor", "--database-url", nobody)
    assert done.returncode == 1
    assert done.stderr == "", done.stderr  # no logged traceback before (or beside) the table
    assert "Traceback" not in done.stdout and "database_unreachable" not in done.stdout
    row = next(line for line in done.stdout.splitlines() if "│ database " in line)
    assert "FAIL" in row and "unreachable" in row
    report = json.loads(cli(tmp_path, "doctor", "--json", "--database-url", nobody).stdout)
    assert {"check": "database", "status": "fail"}.items() <= report["checks"][-1].items()


def test_not_migrated_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    done = cli(tmp_path, "token", "list", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    one_line_error(done, 1, "is not migrated to the current schema", "migrate")


def test_a_schema_newer_than_the_program_is_one_line_that_says_so(tmp_path: Path) -> None:
    """An image rolled back past a migration: `migrate` would not help, and is not what it is told."""
    db = tmp_path / "newer.db"
    url = f"sqlite:///{db}"
    assert cli(tmp_path, "migrate", "--database-url", url).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    for args in (("token", "list"), ("migrate",)):
        done = cli(tmp_path, *args, "--database-url", url)
        line = one_line_error(done, 1, "is at schema revision 9999, newer than this program knows")
        assert "run that version, or restore the backup taken before the upgrade" in line
        assert "run `vibe-ensemble migrate`" not in line


def test_a_server_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    done = run_cli([CLI, "mcp", "--url", url], env={**bare_env(tmp_path), "VIBE_TOKEN": "vibe_" + "x" * 43})
    one_line_error(done, 1, f"cannot reach {url}", "is the server running?")


def test_token_list_in_a_pipe_shows_every_cell_whole_and_as_json(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'vibe.db'}"
    assert cli(tmp_path, "migrate", "--database-url", db).returncode == 0
    label = "a label far longer than eighty columns could ever hold in one table cell, " * 2
    agent = "an-agent-with-a-long-name"
    created = cli(
        tmp_path, "token", "create", "--role", "worker", "--project", "default", "--agent", agent,
        "--label", label.strip(), "--database-url", db,
    )  # fmt: skip
    secret = created.stdout.strip()
    assert created.returncode == 0 and secret.startswith("vibe_"), created.stderr

    table = cli(tmp_path, "token", "list", "--database-url", db)  # stdout is a pipe here
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if agent in line)
    assert secret[:12] + "…" in row and label.strip() in row  # not cut to 80 columns, not wrapped
    assert len(row) > 200

    listed = cli(tmp_path, "token", "list", "--json", "--database-url", db)
    assert listed.returncode == 0 and listed.stderr == ""
    [token] = json.loads(listed.stdout)
    assert token["prefix"] == secret[:12] and token["agent"] == agent and token["label"] == label.strip()
    assert token["role"] == "worker" and token["revoked_at"] is None and "T" in token["created_at"]
    assert secret not in listed.stdout


@pytest.mark.parametrize(
    ("expires", "rule"),
    [
        (
            "garbage",
            "expires_at: must be an ISO 8601 time with a timezone, e.g. 2030-01-31T12:00:00Z (got 'garbage')",
        ),
        ("2030-13-01T00:00:00Z", "expires_at: must be an ISO 8601 time with a timezone"),
        ("2030-01-31", "expires_at: must include a timezone, e.g. 2030-01-31T12:00:00Z"),
        ("2030-01-31T12:00:00", "expires_at: must include a timezone"),
        ("2000-01-01T00:00:00Z", "expires_at: must be in the future"),
        ("9999-12-31T23:00:00-05:00", "expires_at: must be a time between the years 1 and 9999 in UTC"),
    ],
)
def test_a_bad_token_expiry_is_one_line_naming_expires_at_and_creates_nothing(
    tmp_path: Path, expires: str, rule: str
) -> None:
    """What the service says of `expires_at`, the command says of --expires: never a usage box."""
    db = f"sqlite:///{tmp_path / 'vibe.db'}"
    assert cli(tmp_path, "migrate", "--database-url", db).returncode == 0
    done = cli(tmp_path, "token", "create", "--role", "viewer", "--expires", expires, "--database-url", db)
    one_line_error(done, 1, rule)
    assert done.stdout == ""
    listed = cli(tmp_path, "token", "list", "--json", "--database-url", db)
    assert json.loads(listed.stdout) == []  # nothing was created


def test_every_listing_command_takes_json(tmp_path: Path) -> None:
    """The listing commands, each asked for --json: a JSON document (or JSON lines) on stdout."""
    db = f"sqlite:///{tmp_path / 'vibe.db'}"
    assert cli(tmp_path, "migrate", "--database-url", db).returncode == 0
    store = str(tmp_path / "backups")
    assert cli(tmp_path, "backup", "create", "--to", store, "--database-url", db).returncode == 0
    for args in (
        ["token", "list"],
        ["audit"],
        ["backup", "list", "--store", store],
        ["doctor"],
    ):
        done = cli(tmp_path, *args, "--json", "--database-url", db)
        assert done.returncode == 0, (args, done.stderr)
        for line in done.stdout.splitlines():
            json.loads(line)
        assert done.stdout.strip(), args


def test_paths_in_messages_and_tables_are_shown_literally_not_as_markup(tmp_path: Path) -> None:
    """A directory named `[bold]` (or any text in square brackets) is printed as written."""
    db = tmp_path / "[bold]data[/bold]" / "vibe.db"
    done = cli(tmp_path, "token", "list", "--database-url", f"sqlite:///{db}")
    one_line_error(done, 1, f"no database at {db}")
    doctor = cli(tmp_path, "doctor", "--database-url", f"sqlite:///{db}")
    assert "[bold]data[/bold]" in doctor.stdout, doctor.stdout
