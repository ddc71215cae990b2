"""Where backups are kept: a directory, or an S3-compatible bucket (the optional `s3` extra, boto3).

A backup is two objects side by side: `<id>.<ext>` (the compressed database) and `<id>.json` (its
manifest, written last, so a backup without a manifest is one that did not finish).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol


class BackupError(Exception):
    """A backup operation cannot go on; the message says why and what to do."""


class BackupStorage(Protocol):
    location: str

    def put(self, name: str, src: Path) -> None: ...
    def get(self, name: str, dest: Path) -> None: ...
    def put_bytes(self, name: str, data: bytes) -> None: ...
    def get_bytes(self, name: str) -> bytes: ...
    def names(self) -> list[str]: ...
    def delete(self, name: str) -> None: ...


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise BackupError(f"{name!r} is not a backup file name")
    return name


class DirectoryStorage:
    """Backups in a local (or mounted) directory; files are written under a temporary name, then renamed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def _file(self, name: str) -> Path:
        return self.path / _check_name(name)

    def put(self, name: str, src: Path) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self._file(name).with_name(f".{name}.partial")
        shutil.copyfile(src, tmp)
        _fsync(tmp)
        os.replace(tmp, self._file(name))

    def get(self, name: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._file(name), dest)
        except FileNotFoundError:
            raise BackupError(f"{name} is not in {self.location}") from None

    def put_bytes(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self._file(name).with_name(f".{name}.partial")
        tmp.write_bytes(data)
        _fsync(tmp)
        os.replace(tmp, self._file(name))

    def get_bytes(self, name: str) -> bytes:
        try:
            return self._file(name).read_bytes()
        except FileNotFoundError:
            raise BackupError(f"{name} is not in {self.location}") from None

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))

    def delete(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Storage:
    """Backups in `s3://bucket/prefix` through boto3 (credentials from the usual AWS settings)."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        try:
            import boto3
        except ImportError:
            raise BackupError("s3:// backup locations need boto3: pip install 'vibe-ensemble[s3]'") from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, name: str) -> str:
        name = _check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, src: Path) -> None:
        self._client.upload_file(str(src), self.bucket, self._key(name))

    def get(self, name: str, dest: Path) -> None:
        try:
            self._client.download_file(self.bucket, self._key(name), str(dest))
        except Exception as exc:
            raise BackupError(f"cannot read {name} from {self.location}: {exc}") from exc

    def put_bytes(self, name: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def get_bytes(self, name: str) -> bytes:
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except Exception as exc:
            raise BackupError(f"cannot read {name} from {self.location}: {exc}") from exc
        return body

    def names(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(prefix) :]
                if rest and "/" not in rest:
                    names.append(rest)
        return sorted(names)

    def delete(self, name: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_storage(location: str, *, s3_endpoint_url: str | None = None) -> BackupStorage:
    """`s3://bucket/prefix` or a directory path."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise BackupError(f"{location!r}: an S3 location is s3://bucket/prefix")
        return S3Storage(bucket, prefix, endpoint_url=s3_endpoint_url)
    if "://" in location:
        raise BackupError(f"{location!r}: a backup location is a directory or s3://bucket/prefix")
    return DirectoryStorage(Path(location))
