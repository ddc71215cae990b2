"""A backup location that cannot be written is named as such, and keeps no partial file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vibe_ensemble.store.backup_storage import BackupError, DirectoryStorage


def test_a_location_that_is_not_a_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    storage = DirectoryStorage(tmp_path / "a-file" / "backups")
    with pytest.raises(BackupError) as refused:
        storage.put_bytes("x.json", b"{}")
    assert str(refused.value) == (
        f"cannot write x.json to the backup location {tmp_path}/a-file/backups: Not a directory "
        "(check --to/--store, or VIBE_BACKUP_LOCATION)"
    )


def test_a_full_location_is_named_and_keeps_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It read "the database's disk is full", and left `.NAME.partial` taking the space that was left."""
    storage = DirectoryStorage(tmp_path)

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BackupError, match=f"to the backup location {tmp_path}: it is full"):
        storage.put_bytes("b.sqlite.gz", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []
