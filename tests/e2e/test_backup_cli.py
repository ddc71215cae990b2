"""`vibe-ensemble backup …` against a real server under writes, on both backends, and on S3 (moto).

The tests that take the per-test PostgreSQL database are async: the database fixture is async, and it
must live on the test's own event loop to last as long as the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from ..support import ServerProcess, free_port, run_cli, start_server, wait_until


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
    """moto's standalone S3 server on loopback; yields the environment that points boto3 at it."""
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "VIBE_BACKUP_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }

    def up() -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/", timeout=1).status_code < 500
        except httpx2.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, what="moto's S3 server")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


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


async def test_a_missing_pg_dump_is_a_clear_error(postgres_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VIBE_DATA_DIR": str(tmp_path),
        "VIBE_DATABASE_URL": postgres_url,
        "VIBE_PG_BIN_DIR": str(tmp_path / "nowhere"),
    }
    cli(env, "migrate")
    run = cli(env, "backup", "create", "--to", str(tmp_path / "b"), ok=False)
    assert run.returncode == 1
    assert "pg_dump is not in VIBE_PG_BIN_DIR" in run.stderr, run.stderr
    assert "nothing was changed" in run.stderr
    assert not (tmp_path / "b").exists()
