"""Where backups are kept: a directory, or an S3-compatible bucket (the optional `s3` extra, boto3).

A backup is two objects side by side: `<id>.<ext>` (the compressed database) and `<id>.json` (its
manifest, written last, so a backup without a manifest is one that did not finish). While a backup
is taken its id is reserved by a hidden third, `.<id>.reserved`, made only if it is not there yet
(`reserve`): listings skip it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from vibe_ensemble.store.sqlite import private_dirs


class BackupError(Exception):
    """A backup operation cannot go on; the message says why and what to do."""


class MissingBackupFile(BackupError):
    """The named file is not in the storage location (which exists)."""


class NoAtomicCreate(Exception):
    """The storage cannot make a name only if it is not there yet (an S3-compatible service that
    ignores conditional writes): a reservation there would not keep two backups apart."""


class BackupStorage(Protocol):
    location: str

    def put(self, name: str, src: Path) -> None: ...
    def get(self, name: str, dest: Path) -> None: ...
    def put_bytes(self, name: str, data: bytes) -> None: ...
    def get_bytes(self, name: str) -> bytes: ...
    def names(self) -> list[str]: ...
    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> None: ...
    def reserve(self, name: str) -> bool: ...
    def unreserve(self, name: str) -> None: ...


MARK_SUFFIX = ".reserved"


def _mark_name(name: str) -> str:
    """The hidden name that reserves backup id `name` (listings skip names that start with a dot)."""
    return f".{_check_name(name)}{MARK_SUFFIX}"


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise BackupError(f"{name!r} is not a backup file name")
    return name


class DirectoryStorage:
    """Backups in a local (or mounted) directory; files are written under a temporary name, then renamed.

    Backups hold token hashes and agents' mail: directories created here are 0700 and files written
    0600, like the database itself (docs/security.md); an existing directory is left as it is.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def _file(self, name: str) -> Path:
        return self.path / _check_name(name)

    def _require(self) -> None:
        """Reading from a directory that is not there is an error (a mistyped --store), not an empty list."""
        if not self.path.exists():
            raise BackupError(
                f"the backup location {self.location} does not exist: check --store (or VIBE_BACKUP_LOCATION)"
            )
        if not self.path.is_dir():
            raise BackupError(f"the backup location {self.location} is not a directory")

    def _write(self, name: str, fill: Callable[[BinaryIO], object]) -> None:
        """Write `name` under a temporary name, then rename it. A location that cannot be written (not
        a directory, read-only, full) is a BackupError naming it, and leaves no partial file behind
        (it was taken for the database's fault: "cannot reach the database", "the database's disk
        is full")."""
        final = self._file(name)
        tmp = final.with_name(f".{name}.partial")
        try:
            private_dirs(self.path)
            tmp.unlink(missing_ok=True)  # a leftover of an interrupted run may have other permissions
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            why = "it is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise BackupError(
                f"cannot write {name} to the backup location {self.location}: {why} "
                "(check --to/--store, or VIBE_BACKUP_LOCATION)"
            ) from exc

    def put(self, name: str, src: Path) -> None:
        def copy(fh: BinaryIO) -> None:
            with src.open("rb") as fin:
                shutil.copyfileobj(fin, fh, 1 << 20)

        self._write(name, copy)

    def get(self, name: str, dest: Path) -> None:
        self._require()
        try:
            shutil.copyfile(self._file(name), dest)
        except FileNotFoundError:
            raise MissingBackupFile(f"{name} is not in {self.location}") from None

    def put_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda fh: fh.write(data))

    def get_bytes(self, name: str) -> bytes:
        self._require()
        try:
            return self._file(name).read_bytes()
        except FileNotFoundError:
            raise MissingBackupFile(f"{name} is not in {self.location}") from None

    def names(self) -> list[str]:
        """The files in the location (not the hidden ones: partial writes, reservations)."""
        self._require()
        return sorted(p.name for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        return self._file(name).is_file()

    def delete(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)

    def reserve(self, name: str) -> bool:
        """Take `name` (a backup id) for one `create`, atomically: False when another has it. Two
        backups with one label in one second (a scheduled job and one started by hand) chose the same
        id, and the second overwrote the first. The mark is a hidden file (O_EXCL), which listings skip."""
        try:
            private_dirs(self.path)
            os.close(os.open(self.path / _mark_name(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        except OSError as exc:
            why = "it is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise BackupError(
                f"cannot write to the backup location {self.location}: {why} "
                "(check --to/--store, or VIBE_BACKUP_LOCATION)"
            ) from None
        return True

    def unreserve(self, name: str) -> None:
        (self.path / _mark_name(name)).unlink(missing_ok=True)


# What S3 answers a conditional write (If-None-Match: *) whose key is there already (412), or
# that another conditional write of the same key is racing (409), and one it does not take (501).
_TAKEN = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_NOT_TAKEN = ("NotImplemented", "501")


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3Storage:
    """Backups in `s3://bucket/prefix` through boto3 (credentials from the usual AWS settings)."""

    def __init__(
        self, bucket: str, prefix: str, *, endpoint_url: str | None = None, client: Any = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            try:
                import boto3
            except ImportError:
                raise BackupError(
                    "s3:// backup locations need boto3: pip install 'vibe-ensemble[s3]'"
                ) from None
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self._client: Any = client
        self._conditional: bool | None = None  # whether the service honours If-None-Match (`reserve`)
        self._probing = threading.Lock()  # held by reservations until `_conditional` is known

    def _key(self, name: str) -> str:
        name = _check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _mark_key(self, name: str) -> str:
        mark = _mark_name(name)
        return f"{self.prefix}/{mark}" if self.prefix else mark

    def _failed(self, doing: str, exc: Exception, name: str = "") -> BackupError:
        """One line for a failed S3 call: a missing key is MissingBackupFile, anything else (no such
        bucket, no credentials, refused) names the location and the service's own words."""
        if _code(exc) in ("NoSuchKey", "404", "NotFound"):
            return MissingBackupFile(f"{name} is not in {self.location}")
        return BackupError(f"cannot {doing} {self.location}: {' '.join(str(exc).split())}")

    def put(self, name: str, src: Path) -> None:
        try:
            self._client.upload_file(str(src), self.bucket, self._key(name))
        except Exception as exc:
            raise self._failed(f"write {name} to", exc, name) from exc

    def get(self, name: str, dest: Path) -> None:
        try:
            self._client.download_file(self.bucket, self._key(name), str(dest))
        except Exception as exc:
            raise self._failed(f"read {name} from", exc, name) from exc

    def put_bytes(self, name: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except Exception as exc:
            raise self._failed(f"write {name} to", exc, name) from exc

    def get_bytes(self, name: str) -> bytes:
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except Exception as exc:
            raise self._failed(f"read {name} from", exc, name) from exc
        return body

    def names(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    rest = obj["Key"][len(prefix) :]
                    if rest and "/" not in rest and not rest.startswith("."):  # not reservations
                        names.append(rest)
        except Exception as exc:
            raise self._failed("list", exc) from exc
        return sorted(names)

    def delete(self, name: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            raise self._failed(f"delete {name} from", exc, name) from exc

    def exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            failure = self._failed(f"read {name} from", exc, name)
            if isinstance(failure, MissingBackupFile):
                return False
            raise failure from exc
        return True

    def reserve(self, name: str) -> bool:
        """Take `name` (a backup id) for one `create` with a conditional write (`If-None-Match: *`,
        which S3 has honoured since 2024): False when another has it. Without it two backups with one
        label started in one second chose one id, and one overwrote the other.

        A service that answers the condition NotImplemented, or takes it and ignores it (the first
        reservation writes the mark twice to find out), raises NoAtomicCreate: a mark there keeps
        nothing apart."""
        # Until the first reservation has found out, reservations (threads of one command) go one at
        # a time: one made meanwhile on a service that ignores the condition would hold nothing.
        with self._probing if self._conditional is None else contextlib.nullcontext():
            if self._conditional is False:
                raise NoAtomicCreate(self.location)
            key = self._mark_key(name)
            if not self._put_if_absent(key):
                return False
            if self._conditional is None:  # the first reservation: is the condition honoured?
                self._conditional = not self._put_if_absent(key)
                if not self._conditional:
                    self.unreserve(name)
                    raise NoAtomicCreate(self.location)
            return True

    def _put_if_absent(self, key: str) -> bool:
        """Write an empty object at `key` unless it is there: False when it was."""
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except Exception as exc:
            code = _code(exc)
            if code in _TAKEN:
                return False
            if code in _NOT_TAKEN:
                self._conditional = False
                raise NoAtomicCreate(self.location) from None
            raise self._failed("write to", exc) from exc
        return True

    def unreserve(self, name: str) -> None:
        """Give the id back (best effort: a mark left behind only keeps its id from being used)."""
        with contextlib.suppress(Exception):
            self._client.delete_object(Bucket=self.bucket, Key=self._mark_key(name))


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
