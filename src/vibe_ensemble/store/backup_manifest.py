"""What a backup is: its manifest (`<id>.json`), its label, and how it is checked.

The manifest records time, label, backend, schema revision, row counts per table, size and
sha256 of the stored file; `compare` checks a restored database against it. The operations
that write and read manifests are in store/backup.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from vibe_ensemble.store.backup_storage import BackupError

MANIFEST_FORMAT = 1
BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}  # what a backup may be of, as people write it
LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass
class Manifest:
    id: str
    label: str
    created_at: datetime
    backend: str  # sqlite | postgresql
    schema_revision: str | None
    row_counts: dict[str, int]
    file: str
    size: int
    sha256: str
    source: str  # the database URL, without its password
    seconds: float
    format: int = MANIFEST_FORMAT

    def to_json(self) -> bytes:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, name: str) -> Manifest:
        """The manifest stored as `name`, or a BackupError naming that file and what is wrong."""
        try:
            data = json.loads(raw)
            data["created_at"] = datetime.fromisoformat(data["created_at"])
            manifest = cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problem = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
            raise UnreadableManifest(name, problem) from exc
        if manifest.created_at.tzinfo is None:  # ours are UTC; a naive time cannot be ordered with them
            raise UnreadableManifest(name, "created_at has no time zone")
        if not isinstance(manifest.file, str) or not isinstance(manifest.id, str):
            raise UnreadableManifest(name, "id and file must be strings")
        if not isinstance(manifest.backend, str) or manifest.backend not in BACKENDS:
            raise UnreadableManifest(
                name, f"backend must be one of {', '.join(BACKENDS)} (got {manifest.backend!r:.40})"
            )
        if manifest.schema_revision is not None and not isinstance(manifest.schema_revision, str):
            raise UnreadableManifest(name, "schema_revision must be a string or null")
        return manifest


class UnreadableManifest(BackupError):
    """A manifest that cannot be read (damaged, edited, not one of ours): its backup cannot be used."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"unreadable manifest {name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass
class Check:
    """The outcome of verifying one backup (or a restored database)."""

    id: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RestoreResult:
    id: str
    target: str
    safety_backup: str | None
    migrated_to: str
    seconds: float


def check_label(label: str) -> str:
    if not label or len(label) > 32 or not set(label) <= LABEL_CHARS or label.startswith("-"):
        raise BackupError(f"label {label!r}: use 1-32 lower-case letters, digits and '-' (e.g. daily)")
    return label


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compare(manifest: Manifest, revision: str | None, counts: dict[str, int]) -> list[str]:
    problems = []
    if revision != manifest.schema_revision:
        problems.append(f"schema revision is {revision}, the manifest says {manifest.schema_revision}")
    for table, expected in sorted(manifest.row_counts.items()):
        got = counts.get(table)
        if got != expected:
            problems.append(f"table {table}: {got} rows, the manifest says {expected}")
    extra = sorted(set(counts) - set(manifest.row_counts))
    if extra:
        problems.append(f"tables not in the manifest: {', '.join(extra)}")
    return problems
