"""Backup ids: two backups with one label started in one second never share an id, in a directory
or on S3 (moto), whatever the order in which they go (docs/backups.md)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import backup as backup_module
from vibe_ensemble.store.backup import Backups
from vibe_ensemble.store.backup_manifest import Manifest
from vibe_ensemble.store.backup_storage import BackupStorage, DirectoryStorage, S3Storage

from ..support import moto_s3

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is the point

ONE_SECOND = datetime(2026, 3, 1, 2, 0, 0, tzinfo=UTC)


class _Frozen(datetime):
    """Every backup starts in the same second."""

    @classmethod
    def now(cls, tz: Any = None) -> _Frozen:
        return cls.fromtimestamp(ONE_SECOND.timestamp(), tz)


class _IgnoresConditions:
    """An S3-compatible service that takes `If-None-Match` and ignores it (as older ones did)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_object(self, **kwargs: Any) -> Any:
        kwargs.pop("IfNoneMatch", None)
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _s3_client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["VIBE_BACKUP_S3_ENDPOINT_URL"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


# docs/backups.md: `YYYYMMDDTHHMMSSZ-label`, then `-2`, `-3`, …; where the S3 service does not honour
# conditional writes, a random suffix of 8 hex digits instead
NUMBERED, RANDOM = r"(-\d+)?", r"-[0-9a-f]{8}"


@pytest.fixture(
    params=[
        "directory",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("s3-unconditional", marks=pytest.mark.s3),
    ]
)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BackupStorage, str]]:
    """A backup location, and how the ids it gives end."""
    if request.param == "directory":
        yield DirectoryStorage(tmp_path / "backups"), NUMBERED
        return
    with moto_s3(tmp_path) as env:
        client = _s3_client(env)
        client.create_bucket(Bucket="vibe")
        if request.param == "s3":  # as the CLI opens it: credentials from the environment
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            endpoint = env["VIBE_BACKUP_S3_ENDPOINT_URL"]
            yield S3Storage("vibe", "team/backups", endpoint_url=endpoint), NUMBERED
        else:
            yield S3Storage("vibe", "team/backups", client=_IgnoresConditions(client)), RANDOM


async def _all_listed_and_verified(backups: Backups, made: list[Manifest]) -> None:
    listed = await backups.manifests()
    assert sorted(m.id for m in listed) == sorted(m.id for m in made)
    assert len(listed) == len(made)
    for manifest in made:
        assert (await backups.verify(manifest.id)).ok
    assert [n for n in backups.storage.names() if "reserved" in n] == []  # no mark is left behind


async def test_backups_started_together_get_ids_of_their_own(
    runtime: Runtime, database_url: str, store: tuple[BackupStorage, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three at once, in one second, with one label: on S3 two or three chose one id, and one backup
    overwrote another (only a directory reserved its ids)."""
    storage, suffix = store
    monkeypatch.setattr(backup_module, "datetime", _Frozen)
    backups = Backups(database_url, storage)
    made = await asyncio.gather(*(backups.create("dup") for _ in range(3)))
    assert len({m.id for m in made}) == 3
    for m in made:
        assert re.fullmatch(rf"20260301T020000Z-dup{suffix}", m.id), m.id
    await _all_listed_and_verified(backups, made)


async def test_a_backup_that_finished_while_another_chose_its_id_is_not_overwritten(
    runtime: Runtime, database_url: str, store: tuple[BackupStorage, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup listed the location, then another with the same label finished in that second (its
    reservation gone with it), and the first reserved the same id and overwrote it: the directory's
    reservation alone did not keep them apart. Now an id is taken only when, once reserved, no
    finished backup has it."""
    storage, _ = store
    monkeypatch.setattr(backup_module, "datetime", _Frozen)
    backups = Backups(database_url, storage)
    real_reserve = storage.reserve
    started = threading.Event()
    other: list[Manifest] = []

    def reserve_after_another_finished(name: str) -> bool:
        if not started.is_set():  # the first reservation: another backup starts, and finishes, first
            started.set()
            worker = threading.Thread(target=lambda: other.append(asyncio.run(backups.create("race"))))
            worker.start()
            worker.join()
        return real_reserve(name)

    monkeypatch.setattr(storage, "reserve", reserve_after_another_finished)
    first = await backups.create("race")
    assert len(other) == 1 and first.id != other[0].id
    await _all_listed_and_verified(backups, [other[0], first])
