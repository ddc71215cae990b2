"""`vibe-ensemble backup …` against a real server under writes, on both backends, and on S3 (moto).

The tests that take the per-test PostgreSQL database are async: the database fixture is async, and it
must live on the test's own event loop to last as long as the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from ..support import ServerProcess, missing_tool, moto_s3, run_cli, start_server, wait_until


def cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    run = run_cli([sys.executable, "-m", "vibe_ensemble.cli", *args], env=env, timeout=180)
    if ok:
        assert run.returncode == 0, run.stderr
    return run


def backup_age(server: ServerProcess) -> float:
    text = httpx2.get(server.url + "/metrics", timeout=5).text
    match = re.search(r"^vibe_backup_age_seconds (\S+)$", text, re.M)
    assert match, "vibe_backup_age_seconds missing from /metrics"
    return float(match.group(1))


class Writer(threading.Thread):
    """Creates issues over REST until stopped; counts the ones the server acknowledged."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.acked = 0
        self.halt = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        with httpx2.Client(base_url=self.server.url, headers=headers, timeout=10) as http:
            while not self.halt.is_set():
                r = http.post("/api/v1/projects/default/issues", json={"title": f"w{self.acked}"})
                assert r.status_code == 201, r.text
                self.acked += 1


async def test_backup_while_serving_then_restore(database_url: str, tmp_path: Path) -> None:
    server = start_server(tmp_path, database_url=database_url)
    env = {**server.env}
    store = str(tmp_path / "backups")
    try:
        assert backup_age(server) == float("inf")  # never backed up
        writer = Writer(server)
        writer.start()
        wait_until(lambda: writer.acked >= 5, what="the first writes")
        manifest = json.loads(
            cli(env, "backup", "create", "--to", store, "--label", "daily", "--json").stdout
        )
        writer.halt.set()
        writer.join(timeout=20)
        assert manifest["row_counts"]["issues"] >= 5
        assert writer.acked >= manifest["row_counts"]["issues"]

        listed = json.loads(cli(env, "backup", "list", "--store", store, "--json").stdout)
        assert [m["id"] for m in listed] == [manifest["id"]]
        verified = json.loads(cli(env, "backup", "verify", manifest["id"], "--store", store, "--json").stdout)
        assert verified["ok"], verified["problems"]
        wait_until(lambda: backup_age(server) < 120, timeout=30, what="/metrics to show the backup's age")

        refused = cli(env, "backup", "restore", manifest["id"], "--store", store, ok=False)
        assert refused.returncode == 1
        assert "--force" in refused.stderr
        if database_url.startswith("sqlite"):  # the owner lock names the server: its pid and MCP URL
            said = " ".join(refused.stderr.split())
            assert f"(pid {server.proc.pid}: `vibe-ensemble serve`, MCP at {server.mcp_url})" in said
    finally:
        server.stop()

    done = cli(env, "backup", "restore", manifest["id"], "--store", store)
    assert "safety backup of the previous state" in done.stderr
    labels = [m["label"] for m in json.loads(cli(env, "backup", "list", "--store", store, "--json").stdout)]
    assert labels == ["daily", "pre-restore"]

    server = start_server(tmp_path, database_url=database_url)
    try:
        headers = {"Authorization": f"Bearer {server_token(env)}"}
        r = httpx2.get(server.url + "/api/v1/projects/default/issues?limit=500", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == manifest["row_counts"]["issues"]
    finally:
        server.stop()


def server_token(env: dict[str, str]) -> str:
    return cli(env, "token", "create", "--role", "admin").stdout.strip()


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    with moto_s3(tmp_path) as env:
        yield env


@pytest.mark.s3
def test_backups_in_an_s3_bucket(moto_server: dict[str, str], tmp_path: Path) -> None:
    import boto3

    env = {**os.environ, **moto_server, "VIBE_DATA_DIR": str(tmp_path / "data")}
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server["VIBE_BACKUP_S3_ENDPOINT_URL"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="vibe")
    cli(env, "migrate")
    server_token(env)
    store = "s3://vibe/team/backups"

    ids = [cli(env, "backup", "create", "--to", store, "--label", "daily").stdout.strip() for _ in range(3)]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="vibe")["Contents"])
    assert keys == sorted(f"team/backups/{i}{ext}" for i in ids for ext in (".json", ".sqlite.gz"))
    listed = json.loads(cli(env, "backup", "list", "--store", store, "--json").stdout)
    assert [m["id"] for m in listed] == ids
    assert listed[0]["row_counts"]["credentials"] == 1
    assert json.loads(cli(env, "backup", "verify", ids[-1], "--store", store, "--json").stdout)["ok"]

    pruned = cli(env, "backup", "prune", "--store", store, "--keep-daily", "1").stdout.split()
    assert pruned == ["deleted", ids[0], "deleted", ids[1]]
    other = tmp_path / "restored.db"
    cli(env, "backup", "restore", ids[2], "--store", store, "--to", f"sqlite:///{other}")
    import sqlite3

    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT count(*) FROM credentials").fetchone()[0] == 1

    unknown = cli(env, "backup", "delete", ids[2], "20260101T000000Z-manual", "--store", store, ok=False)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr, unknown.stderr
    assert "no backup '20260101T000000Z-manual'" in unknown.stderr
    assert len(s3.list_objects_v2(Bucket="vibe")["Contents"]) == 2  # an unknown id deletes nothing
    assert cli(env, "backup", "delete", ids[2], "--store", store).stdout.split() == ["deleted", ids[2]]
    assert "Contents" not in s3.list_objects_v2(Bucket="vibe")


async def test_pg_dump_missing_from_pg_bin_dir_is_taken_from_path(postgres_url: str, tmp_path: Path) -> None:
    """docs/backups.md: pg_dump is looked for in VIBE_PG_BIN_DIR, then on PATH, then in
    /usr/lib/postgresql/*/bin. (Its absence everywhere is tests/unit/test_backup_postgres.py.)"""
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path), "VIBE_DATABASE_URL": postgres_url}
    tools = os.environ.get("VIBE_PG_BIN_DIR")
    if tools:  # the embedded server's own tools: put them on PATH, where the fallback finds them
        env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    elif shutil.which("pg_dump") is None:
        missing_tool("no pg_dump on PATH: install PostgreSQL's client tools (Debian: postgresql-client)")
    env["VIBE_PG_BIN_DIR"] = str(tmp_path / "nowhere")
    cli(env, "migrate")
    backup_id = cli(env, "backup", "create", "--to", str(tmp_path / "b")).stdout.strip()
    assert (tmp_path / "b" / f"{backup_id}.pgdump").stat().st_mode & 0o777 == 0o600  # private, as any backup


async def test_backup_create_against_a_postgresql_that_does_not_answer_ends_at_its_time_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    """`backup create` waited forever while a session held a lock on a table (as for a PostgreSQL that
    hangs): it now ends after VIBE_PG_TOOL_TIMEOUT_S with one line naming the limit and the setting,
    exit 1, and lists nothing."""
    import asyncpg

    from vibe_ensemble.store.backup_target import Target

    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path), "VIBE_DATABASE_URL": postgres_url}
    cli(env, "migrate")
    store = tmp_path / "backups"
    holder = await asyncpg.connect(Target(postgres_url).dsn())
    try:
        await holder.execute("BEGIN; LOCK TABLE issues IN ACCESS EXCLUSIVE MODE")
        run = run_cli(
            [sys.executable, "-m", "vibe_ensemble.cli", "backup", "create", "--to", str(store)],
            env={**env, "VIBE_PG_TOOL_TIMEOUT_S": "2"},
            timeout=90,
        )
    finally:
        await holder.close()
    one_line(run, 1, "did not finish within 2 s (VIBE_PG_TOOL_TIMEOUT_S)", "nothing was stored")
    assert json.loads(cli(env, "backup", "list", "--store", str(store), "--json").stdout) == []
    assert [p.name for p in store.iterdir()] == []  # nothing half-written, no reservation left


# What an outside tester found: each defect as a class, on SQLite (no server needed).


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """A migrated SQLite database under tmp_path/data, with one credential (token hashes are what a
    backup must keep private)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}
    env["VIBE_DATA_DIR"] = str(tmp_path / "data")
    cli(env, "migrate")
    server_token(env)
    return env


def one_line(run: subprocess.CompletedProcess[str], code: int, *phrases: str) -> str:
    """The failure is one `error:` line on stderr with each phrase (no traceback), and exit `code`."""
    assert run.returncode == code, (run.returncode, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_backups_and_new_restore_targets_are_private(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    os.umask(0o022)  # what most shells give: new files would be world-readable by default
    store = tmp_path / "new" / "backups"
    backup_id = cli(sqlite_env, "backup", "create", "--to", str(store)).stdout.strip()
    assert [mode(p) for p in (tmp_path / "new", store)] == [0o700, 0o700]
    assert {p.name: mode(p) for p in store.iterdir()} == {
        f"{backup_id}.json": 0o600,
        f"{backup_id}.sqlite.gz": 0o600,
    }
    default = tmp_path / "data" / "backups"  # the default store under the data directory
    cli(sqlite_env, "backup", "create")
    assert mode(default) == 0o700 and {mode(p) for p in default.iterdir()} == {0o600}

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    cli(sqlite_env, "backup", "create", "--to", str(shared))
    assert mode(shared) == 0o755  # an existing directory is left as it is; the files are private
    assert {mode(p) for p in shared.iterdir()} == {0o600}

    # A restore that creates a database: through VIBE_DATA_DIR, and through --to.
    env = {**sqlite_env, "VIBE_DATA_DIR": str(tmp_path / "fresh" / "data")}
    cli(env, "backup", "restore", backup_id, "--store", str(store))
    assert [mode(tmp_path / "fresh"), mode(tmp_path / "fresh" / "data")] == [0o700, 0o700]
    assert mode(tmp_path / "fresh" / "data" / "vibe.db") == 0o600
    target = tmp_path / "other" / "sub" / "restored.db"
    cli(sqlite_env, "backup", "restore", backup_id, "--store", str(store), "--to", f"sqlite:///{target}")
    assert [mode(tmp_path / "other"), mode(target.parent), mode(target)] == [0o700, 0o700, 0o600]
    assert {mode(p) for p in target.parent.iterdir()} == {0o600}  # its lock file too


def test_paths_and_errors_are_printed_literally_never_as_markup(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "[bold]backups[/bold]"
    done = cli(sqlite_env, "backup", "create", "--to", str(store))
    assert f"written to {store}:" in done.stderr
    listed = cli(sqlite_env, "backup", "list", "--store", str(store / "[red]missing"), ok=False)
    one_line(listed, 1, str(store / "[red]missing"))

    # Without boto3, the install hint keeps its extra: pip install 'vibe-ensemble[s3]'.
    no_boto3 = (
        "import runpy, sys; sys.modules['boto3'] = None; "
        "runpy.run_module('vibe_ensemble.cli', run_name='__main__')"
    )
    run = run_cli(
        [sys.executable, "-c", no_boto3, "backup", "create", "--to", "s3://bucket/x"], env=sqlite_env
    )
    one_line(run, 1, "--to: ", "pip install 'vibe-ensemble[s3]'")


def test_a_database_url_option_given_a_path_is_one_line_naming_the_option(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    backup_id = cli(sqlite_env, "backup", "create").stdout.strip()
    run = cli(sqlite_env, "backup", "restore", backup_id, "--to", str(tmp_path / "plain.db"), ok=False)
    one_line(run, 2, "--to: cannot parse the database URL", f"sqlite:///{tmp_path / 'plain.db'}")
    assert not (tmp_path / "plain.db").exists() and not (tmp_path / "plain.db.lock").exists()
    run = cli(sqlite_env, "backup", "restore", backup_id, "--to", "sqlite://", ok=False)
    one_line(run, 2, "--to: ", "in-memory")
    for scratch in ("/plain/path", "sqlite:///x.db"):
        run = cli(sqlite_env, "backup", "verify", backup_id, "--scratch-url", scratch, ok=False)
        one_line(run, 2, "--scratch-url: ")
    for command in (["backup", "list"], ["backup", "create"], ["token", "list"], ["migrate"]):
        run = cli(sqlite_env, *command, "--database-url", str(tmp_path / "plain.db"), ok=False)
        one_line(
            run, 2, "cannot parse the database URL", f"(for a SQLite file: sqlite:///{tmp_path / 'plain.db'})"
        )


def test_a_damaged_gzip_whose_checksum_matches_is_reported_as_damaged(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    import gzip
    import hashlib
    import zlib

    store = tmp_path / "backups"
    backup_id = cli(sqlite_env, "backup", "create", "--to", str(store)).stdout.strip()
    stored = store / f"{backup_id}.sqlite.gz"
    # A valid gzip header followed by a deflate stream zlib refuses (not an OSError: zlib.error).
    damaged = gzip.compress(b"")[:10] + b"\xff" * 64
    with pytest.raises(zlib.error):
        gzip.decompress(damaged)
    stored.write_bytes(damaged)
    manifest = json.loads((store / f"{backup_id}.json").read_text())
    manifest["sha256"] = hashlib.sha256(damaged).hexdigest()  # damaged before it was stored
    (store / f"{backup_id}.json").write_text(json.dumps(manifest))

    run = cli(sqlite_env, "backup", "verify", backup_id, "--store", str(store), ok=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"{backup_id}.sqlite.gz is damaged" in run.stderr
    target = tmp_path / "new" / "restored.db"
    run = _restore_refused(sqlite_env, store, backup_id, target)
    one_line(run, 1, f"{backup_id}.sqlite.gz is damaged")
    # A failed restore into a database that did not exist leaves nothing behind (no *.db.lock).
    assert not (tmp_path / "new").exists()


def _restore_refused(
    env: dict[str, str], store: Path, backup_id: str, target: Path
) -> subprocess.CompletedProcess[str]:
    """`backup restore ID --to sqlite:///TARGET`, expected to fail."""
    return cli(
        env, "backup", "restore", backup_id, "--store", str(store), "--to", f"sqlite:///{target}", ok=False
    )


def test_a_failed_restore_into_an_existing_directory_leaves_no_stray_files(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "backups"
    backup_id = cli(sqlite_env, "backup", "create", "--to", str(store)).stdout.strip()
    manifest = json.loads((store / f"{backup_id}.json").read_text())
    manifest["row_counts"]["credentials"] = 99  # restores, then fails its check against the manifest
    (store / f"{backup_id}.json").write_text(json.dumps(manifest))
    here = tmp_path / "here"
    here.mkdir()
    run = _restore_refused(sqlite_env, store, backup_id, here / "x.db")
    one_line(run, 1, "the manifest says 99", "did not exist before")
    assert list(here.iterdir()) == []


def test_an_unreadable_manifest_is_named_and_only_its_backup_is_left_alone(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "backups"
    ids = [
        cli(sqlite_env, "backup", "create", "--to", str(store), "--label", "daily").stdout.strip()
        for _ in range(3)
    ]
    bad = store / f"{ids[0]}.json"
    bad.write_text("{bad")

    listed = cli(sqlite_env, "backup", "list", "--store", str(store), "--json")
    assert [m["id"] for m in json.loads(listed.stdout)] == ids[1:]
    assert f"{bad.name} in {store} cannot be read" in listed.stderr
    table = cli(sqlite_env, "backup", "list", "--store", str(store))
    assert ids[1] in table.stdout and bad.name in table.stderr

    pruned = cli(sqlite_env, "backup", "prune", "--store", str(store), "--keep-daily", "1", ok=False)
    assert pruned.returncode == 1 and "Traceback" not in pruned.stderr, pruned.stderr
    assert pruned.stdout.split() == ["deleted", ids[1]]
    assert f"{bad.name} in {store} cannot be read" in pruned.stderr
    assert pruned.stderr.splitlines()[-1].startswith("error: 1 unreadable manifests in ")
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [bad.name, f"{ids[0]}.sqlite.gz", f"{ids[2]}.json", f"{ids[2]}.sqlite.gz"]
    )


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["prune"],
        ["verify", "20260101T000000Z-daily"],
        ["delete", "20260101T000000Z-daily"],
    ],
    ids=" ".join,
)
def test_a_backup_location_that_does_not_exist_is_an_error(
    sqlite_env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    run = cli(sqlite_env, "backup", *args, "--store", str(missing), ok=False)
    one_line(run, 1, f"the backup location {missing} does not exist", "--store")
    assert not missing.exists()


def test_a_backup_location_that_cannot_be_written_is_named_not_the_database(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """It read "cannot reach the database (… Not a directory: …)"."""
    (tmp_path / "a-file").write_text("")
    where = tmp_path / "a-file" / "backups"
    run = cli(sqlite_env, "backup", "create", "--to", str(where), ok=False)
    one_line(run, 1, f"to the backup location {where}: Not a directory")


def test_verify_with_no_database_here_makes_none(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    """Verify records its outcome in the audit log; with no database at the configured place it made
    an empty one there to do so (only `serve --migrate` and `migrate` create a database)."""
    store = tmp_path / "store"
    made = cli(sqlite_env, "backup", "create", "--to", str(store), "--json").stdout
    elsewhere = {**sqlite_env, "VIBE_DATA_DIR": str(tmp_path / "nodata")}
    run = cli(elsewhere, "backup", "verify", json.loads(made)["id"], "--store", str(store))
    assert f"not recorded in the audit log: there is no database at {tmp_path}/nodata/vibe.db" in run.stderr
    assert not (tmp_path / "nodata").exists()


def dump(db: Path) -> list[str]:
    """A SQLite database's schema and rows as SQL: equal when nothing in it changed."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        lines = list(conn.iterdump())
    conn.close()
    return lines


def test_a_backup_newer_than_this_program_is_refused_by_restore_and_reported_by_verify(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """A backup a newer vibe-ensemble took: restore refuses it naming the revision before anything is
    done (no safety backup, the database as it was), and verify says plainly why it would not restore."""
    import sqlite3

    from vibe_ensemble.store.migrate import HEAD

    db, store = tmp_path / "data" / "vibe.db", tmp_path / "backups"

    def at(revision: str) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        conn.close()

    newer_revision = f"{int(HEAD) + 1:04d}"
    at(newer_revision)
    backup_id = cli(sqlite_env, "backup", "create", "--to", str(store)).stdout.strip()
    at(HEAD)
    newer = f"is at schema revision {newer_revision}, newer than this program knows (its newest is {HEAD})"

    run = cli(sqlite_env, "backup", "verify", backup_id, "--store", str(store), ok=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.splitlines() == [
        f"backup {backup_id} failed verification:",
        f"  - the backup {newer}: this vibe-ensemble cannot restore it; the one that took it (or a newer "
        "one) can",
    ]
    before = dump(db)  # (verify wrote its outcome to the audit log)
    run = cli(sqlite_env, "backup", "restore", backup_id, "--store", str(store), ok=False)
    one_line(
        run,
        1,
        f"backup {backup_id} {newer}: restore it with the vibe-ensemble that took it",
        "nothing was changed",
    )
    assert dump(db) == before
    assert sorted(p.name for p in store.iterdir()) == [f"{backup_id}.json", f"{backup_id}.sqlite.gz"]


async def test_a_postgresql_backup_on_sqlite_says_what_verify_and_restore_need(
    postgres_url: str, tmp_path: Path
) -> None:
    """The configured database is SQLite: verifying a PostgreSQL backup needs a PostgreSQL server
    (--scratch-url, or a PostgreSQL database configured), restoring it a PostgreSQL database."""
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path / "pg"), "VIBE_DATABASE_URL": postgres_url}
    if not os.environ.get("VIBE_PG_BIN_DIR") and shutil.which("pg_dump") is None:
        missing_tool("no pg_dump on PATH: install PostgreSQL's client tools (Debian: postgresql-client)")
    store = str(tmp_path / "backups")
    cli(env, "migrate")
    backup_id = cli(env, "backup", "create", "--to", store).stdout.strip()
    on_sqlite = {k: v for k, v in env.items() if k != "VIBE_DATABASE_URL"} | {
        "VIBE_DATA_DIR": str(tmp_path / "data")
    }
    cli(on_sqlite, "migrate")
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'vibe.db'}"

    run = cli(on_sqlite, "backup", "verify", backup_id, "--store", store, ok=False)
    one_line(
        run,
        1,
        f"backup {backup_id} is a PostgreSQL backup; verifying it restores it into a scratch database on a "
        f"PostgreSQL server, and the configured database ({sqlite_url}) is SQLite: name a PostgreSQL server "
        "with --scratch-url postgresql://user@host:5432/db, or configure a PostgreSQL database "
        "(--database-url or VIBE_DATABASE_URL)",
    )
    run = cli(on_sqlite, "backup", "restore", backup_id, "--store", store, ok=False)
    one_line(
        run,
        1,
        f"backup {backup_id} is a PostgreSQL backup; the configured database ({sqlite_url}) is SQLite: "
        "restore it into a PostgreSQL database (--to postgresql://user@host:5432/db, or configure one with "
        "--database-url or VIBE_DATABASE_URL); nothing was changed",
    )
    cli(on_sqlite, "backup", "verify", backup_id, "--store", store, "--scratch-url", postgres_url)
