"""`doctor` finds what is wrong and says what to fix; a clean installation passes."""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services.backups import CREATED
from vibe_ensemble.services.doctor import Finding, run_checks

from ..conftest import make_settings
from ..support import run_cli


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


async def test_a_migrated_database_with_a_recent_backup_passes(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    try:
        found = by_check(await run_checks(settings))
        assert found["database"].status == "ok"
        assert found["migrations"].status == "ok"
        assert found["clock"].status == "ok"
        assert found["last backup"].status == "warn"
        assert "backup create" in found["last backup"].fix

        await rt.services.backups.record(SYSTEM, CREATED, backup="20260101T000000Z-daily")
        found = by_check(await run_checks(settings))
        assert found["last backup"].status == "ok"
        assert "20260101T000000Z-daily" in found["last backup"].detail
        later = by_check(await run_checks(settings, now=datetime.now(UTC) + timedelta(days=2)))
        assert later["last backup"].status == "warn"
        assert not any(f.status == "fail" for f in found.values())
    finally:
        await rt.stop()


async def test_an_unmigrated_database_fails_with_the_command(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    found = by_check(await run_checks(settings))
    failed = found.get("migrations") if database_url.startswith("postgres") else found["database"]
    assert failed is not None and failed.status == "fail"
    assert "vibe-ensemble migrate" in failed.fix
    assert not (tmp_path / "vibe.db").exists()  # looking does not create the file


async def test_a_directory_where_the_database_should_be_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "vibe.db").mkdir()
    found = by_check(await run_checks(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}", tmp_path)))
    assert found["database"].status == "fail"
    assert found["database"].detail.startswith(f"{tmp_path / 'vibe.db'} is not a file")
    assert "move it aside" in found["database"].fix


async def test_an_unreachable_database_fails_saying_why(tmp_path: Path) -> None:
    settings = make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none", tmp_path)
    found = by_check(await run_checks(settings))
    assert found["database"].status == "fail"
    # the driver's reason, not "the database cannot be reached; retry in 5 s"
    assert found["database"].detail.endswith(
        "is unreachable: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert "migrations" not in found


async def test_a_schema_newer_than_this_program_is_not_told_to_migrate(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path)
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    try:
        async with rt.db.write() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await rt.stop()
    found = by_check(await run_checks(settings))
    assert found["migrations"].status == "fail"
    assert found["migrations"].fix.startswith("a newer vibe-ensemble migrated it")


async def test_production_with_weak_secrets_fails(tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", tmp_path, profile="production", session_secret="short"
    )
    failures = [f for f in await run_checks(settings) if f.check == "secrets"]
    assert {f.detail for f in failures} == {
        "VIBE_REQUEST_STATE_KEY is the default or shorter than 32 characters",
        "VIBE_SESSION_SECRET is unset or shorter than 32 characters",
        "VIBE_METRICS_TOKEN is unset or shorter than 32 characters",
    }
    assert all(f.status == "fail" and "random secret" in f.fix for f in failures)


async def test_a_world_readable_database_file_is_flagged(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}"
    rt = Runtime(make_settings(url, tmp_path))
    await rt.start(apply_migrations=True)
    await rt.stop()
    os.chmod(tmp_path / "vibe.db", 0o644)
    found = by_check(await run_checks(make_settings(url, tmp_path)))
    assert found["permissions: database file"].status == "warn"
    assert found["permissions: database file"].fix == f"chmod 600 {tmp_path / 'vibe.db'}"


def test_the_command_exits_non_zero_on_a_problem_and_prints_json(tmp_path: Path) -> None:
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path)}
    run = run_cli([sys.executable, "-m", "vibe_ensemble.cli", "doctor", "--json"], env=env)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] is False
    assert {"check": "database", "status": "fail"}.items() <= next(
        c for c in report["checks"] if c["check"] == "database"
    ).items()


@pytest.mark.parametrize(
    ("settings", "status", "detail"),
    [
        ({}, "ok", "open, on loopback names only"),
        ({"metrics_token": "t" * 40}, "ok", "answers only VIBE_METRICS_TOKEN"),
        ({"host": "0.0.0.0"}, "warn", "refuses every scrape"),
        ({"allowed_hosts": ["vibe.example.com"]}, "warn", "refuses every scrape"),
    ],
)
async def test_metrics_protection_is_reported(
    tmp_path: Path, settings: dict[str, object], status: str, detail: str
) -> None:
    found = by_check(
        await run_checks(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", tmp_path, **settings))
    )
    assert found["metrics"].status == status
    assert detail in found["metrics"].detail
    if status == "warn":
        assert "VIBE_METRICS_TOKEN" in found["metrics"].fix


@pytest.mark.postgres
async def test_a_pod_without_a_data_directory_is_not_failed_for_it(postgres_url: str, tmp_path: Path) -> None:
    """A restore Job on PostgreSQL with its backups elsewhere (a read-only root, no /data): the
    data directory is not where anything is written, so doctor does not fail for it (the restore
    script reported a good restore as failed). Where it is used (the default backups), it is checked."""
    store = tmp_path / "backups"
    store.mkdir()
    nowhere = Path("/proc/vibe-no-such-dir")  # cannot exist, nor be created
    settings = make_settings(postgres_url, nowhere, backup_location=str(store))
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    try:
        found = by_check(await run_checks(settings))
        assert "disk: data directory" not in found and "permissions: data directory" not in found
        assert found["permissions: backup location"].status == "ok"
        assert not any(f.status == "fail" for f in found.values()), [
            f for f in found.values() if f.status == "fail"
        ]

        default_backups = make_settings(postgres_url, nowhere)  # backups under the data directory
        found = by_check(await run_checks(default_backups))
        assert "permissions: data directory" in found and "disk: data directory" in found
    finally:
        await rt.stop()


async def test_a_backup_location_that_is_a_file_fails(tmp_path: Path) -> None:
    """doctor said `backup location ok` (and suggested a chmod of the file), then `backup create`
    failed: it is not a directory."""
    a_file = tmp_path / "agent.py"
    a_file.write_text("print('hello')\n")
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'v.db'}", tmp_path, backup_location=str(a_file)
    )
    found = by_check(await run_checks(settings))
    assert found["permissions: backup location"].status == "fail"
    assert found["permissions: backup location"].detail == f"{a_file} is a file, not a directory"


def _doctor_json(**settings: str) -> tuple[int, dict[str, dict[str, str]]]:
    """`doctor --json` with these settings (`VIBE_DATA_DIR=…`) and no other database or backup
    location from this environment: its exit code and its findings by check."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIBE_DATABASE_URL", "VIBE_BACKUP_LOCATION")}
    run = run_cli([sys.executable, "-m", "vibe_ensemble.cli", "doctor", "--json"], env={**env, **settings})
    return run.returncode, {c["check"]: c for c in json.loads(run.stdout)["checks"]}


def test_every_command_doctor_prints_carries_vibe_data_dir(tmp_path: Path) -> None:
    """With VIBE_DATA_DIR set, a fix pasted into a fresh shell acts on that data directory: each
    command doctor names starts with `VIBE_DATA_DIR=… ` (README: printed commands carry it)."""
    data_dir = tmp_path / "data"
    prefix = f"VIBE_DATA_DIR={shlex.quote(str(data_dir.resolve()))} "
    _, found = _doctor_json(VIBE_DATA_DIR=str(data_dir))  # no database yet: "run … migrate"
    assert f"`{prefix}" in found["database"]["fix"] and "migrate`" in found["database"]["fix"], found
    env = {k: v for k, v in os.environ.items() if k not in ("VIBE_DATABASE_URL", "VIBE_BACKUP_LOCATION")}
    env["VIBE_DATA_DIR"] = str(data_dir)
    migrated = run_cli([sys.executable, "-m", "vibe_ensemble.cli", "migrate"], env=env)
    assert migrated.returncode == 0, migrated.stderr
    _, found = _doctor_json(VIBE_DATA_DIR=str(data_dir))  # no backup yet: "run … backup create"
    fix = found["last backup"]["fix"]
    assert f"`{prefix}" in fix and "backup create --label daily`" in fix, fix
    commands = [f for c in found.values() for f in c["fix"].split("`")[1::2] if "vibe" in f]
    assert commands and all(c.startswith(prefix) for c in commands), commands


@pytest.mark.parametrize("below", ["", "sub/deeper"])
def test_a_data_directory_that_is_a_file_or_under_one_fails_naming_it(tmp_path: Path, below: str) -> None:
    """VIBE_DATA_DIR at a regular file (or below one): doctor said the backup location `will be
    created` and the disk was fine. Every place under the file fails, naming the file."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory\n")
    data_dir = a_file / below if below else a_file
    code, found = _doctor_json(VIBE_DATA_DIR=str(data_dir))
    assert code == 1
    said = f"{a_file} is a file, not a directory"
    for check, path in (
        ("database", data_dir / "vibe.db"),
        ("permissions: data directory", data_dir),
        ("permissions: backup location", data_dir / "backups"),
    ):
        assert found[check]["status"] == "fail", found[check]
        assert found[check]["detail"].startswith(str(path)) and said in found[check]["detail"], found[check]
        assert "VIBE_DATA_DIR" in found[check]["fix"], found[check]  # the default backups are in it
    assert "disk: data directory" not in found and "disk: backup location" not in found, found
    assert not any("will be created" in c["detail"] for c in found.values()), found


def test_a_backup_location_under_a_file_fails_naming_it(tmp_path: Path) -> None:
    a_file = tmp_path / "backups.tar"
    a_file.write_text("not a directory\n")
    code, found = _doctor_json(
        VIBE_DATA_DIR=str(tmp_path / "data"), VIBE_BACKUP_LOCATION=str(a_file / "daily")
    )
    assert code == 1
    refused = found["permissions: backup location"]
    assert refused["status"] == "fail"
    assert refused["detail"] == f"{a_file / 'daily'} cannot be made: {a_file} is a file, not a directory"
    assert "VIBE_BACKUP_LOCATION" in refused["fix"]
    assert "disk: backup location" not in found


def test_places_that_cannot_be_looked_at_fail_naming_them_through_the_cli(tmp_path: Path) -> None:
    """A path doctor cannot even stat (here a name over 255 bytes: ENAMETOOLONG, which root meets
    too; in production a data directory of mode 700 owned by another user: EACCES) gave a
    traceback. Each place fails, naming the path and the errno's text."""
    too_long = tmp_path / ("x" * 300)
    code, found = _doctor_json(VIBE_DATA_DIR=str(too_long))
    assert code == 1
    why = "cannot be looked at: File name too long (ENAMETOOLONG)"
    for check, path in (
        ("database", too_long / "vibe.db"),
        ("permissions: data directory", too_long),
        ("permissions: backup location", too_long / "backups"),
    ):
        assert found[check]["status"] == "fail", found[check]
        assert found[check]["detail"] == f"{path} {why}", found[check]
        assert "VIBE_DATA_DIR" in found[check]["fix"], found[check]
    assert "disk: data directory" not in found and "disk: backup location" not in found, found

    code, found = _doctor_json(
        VIBE_DATA_DIR=str(tmp_path / "data"), VIBE_BACKUP_LOCATION=str(too_long / "daily")
    )
    assert code == 1
    refused = found["permissions: backup location"]
    assert (refused["status"], refused["detail"]) == ("fail", f"{too_long / 'daily'} {why}"), refused
    assert "VIBE_BACKUP_LOCATION" in refused["fix"]
    assert found["permissions: data directory"]["status"] == "ok", found


async def test_a_data_directory_this_user_may_not_enter_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/data of mode 700 owned by root, doctor run by another user: looking at /data/vibe.db or
    /data/backups raises PermissionError (simulated: the tests run as root, whom chmod does not stop)."""
    locked = tmp_path / "data"
    locked.mkdir()
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    settings = make_settings(f"sqlite+aiosqlite:///{locked / 'vibe.db'}", locked)
    found = by_check(await run_checks(settings))
    denied = "cannot be looked at: Permission denied (EACCES)"
    assert (found["database"].status, found["database"].detail) == ("fail", f"{locked / 'vibe.db'} {denied}")
    backups = found["permissions: backup location"]
    assert (backups.status, backups.detail) == ("fail", f"{locked / 'backups'} {denied}")


async def test_a_read_only_file_system_is_said_so_not_chown_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system mounted read-only (EROFS) no chown or chmod helps: doctor says what it is."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}"
    settings = make_settings(url, tmp_path)
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    await rt.stop()
    statvfs = os.statvfs

    def read_only(path: object) -> os.statvfs_result:
        real = statvfs(path)  # type: ignore[arg-type]
        fields = list(real)
        fields[8] |= os.ST_RDONLY  # f_flag
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", read_only)
    found = by_check(await run_checks(settings))
    refused = found["permissions: database file"]
    assert refused.status == "fail", refused
    assert refused.detail == f"{tmp_path / 'vibe.db'} is on a read-only file system"
    assert "chown" not in refused.fix and "remount" in refused.fix
