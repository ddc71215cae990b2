"""Backup, verify and restore times for a database of 100,000 messages and 10,000 issues.

    python bench/backup.py                       # SQLite, and PostgreSQL when reachable
    python bench/backup.py --backend sqlite --messages 20000 --issues 2000

PostgreSQL: a fresh database is created on VIBE_BENCH_POSTGRES_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres) and dropped afterwards.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import AgentRole
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import tables as t
from vibe_ensemble.store.backup import Backups
from vibe_ensemble.store.backup_storage import DirectoryStorage
from vibe_ensemble.store.database import normalise_url

CHUNK = 5000
BODY = "A message body of a typical length, with a little Markdown: **done**, see #42. " * 3


async def seed(url: str, data_dir: Path, messages: int, issues: int) -> None:
    rt = Runtime(Settings(database_url=url, data_dir=data_dir))
    await rt.start(apply_migrations=True)
    try:
        for name in ("ann", "bob"):
            await rt.services.agents.register(SYSTEM, name=name, role=AgentRole.WORKER, project="default")
        async with rt.db.read() as conn:
            project_id = (await conn.execute(sa.select(t.projects.c.id))).scalar_one()
            bob = (await conn.execute(sa.select(t.agents.c.id).where(t.agents.c.name == "bob"))).scalar_one()
        now = datetime.now(UTC)
        for start in range(0, issues, CHUNK):
            rows = [
                {
                    "project_id": project_id,
                    "title": f"issue {i}",
                    "body": BODY,
                    "status": "open",
                    "priority": "p2",
                    "labels": ["bench"],
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, min(issues, start + CHUNK))
            ]
            async with rt.db.write() as conn:
                await conn.execute(t.issues.insert(), rows)
        for start in range(0, messages, CHUNK):
            n = min(messages, start + CHUNK) - start
            async with rt.db.write() as conn:
                newest = sa.select(sa.func.coalesce(sa.func.max(t.messages.c.id), 0))
                first = (await conn.execute(newest)).scalar_one()
                await conn.execute(
                    t.messages.insert(),
                    [
                        {
                            "project_id": project_id,
                            "sender": "ann",
                            "subject": f"message {start + i}",
                            "body": BODY,
                            "thread_id": f"t{(start + i) // 10}",
                            "importance": "normal",
                            "ack_required": False,
                            "broadcast": False,
                            "created_at": now,
                        }
                        for i in range(n)
                    ],
                )
                await conn.execute(
                    t.message_recipients.insert(),
                    [{"message_id": first + 1 + i, "agent_id": bob} for i in range(n)],
                )
                await conn.execute(
                    t.events.insert(),
                    [
                        {
                            "time": now,
                            "project_id": project_id,
                            "type": "message.sent",
                            "actor": "ann",
                            "payload": {"id": first + 1 + i},
                        }
                        for i in range(n)
                    ],
                )
    finally:
        await rt.stop()


async def run(backend: str, messages: int, issues: int) -> None:
    with tempfile.TemporaryDirectory(prefix="vibe-bench-backup-") as tmp:
        work = Path(tmp)
        admin_url = normalise_url(
            os.environ.get("VIBE_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
        )
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{work / 'vibe.db'}"
            target = f"sqlite+aiosqlite:///{work / 'restored.db'}"
        else:
            names = [f"vibe_bench_{secrets.token_hex(4)}" for _ in range(2)]
            engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
            async with engine.connect() as conn:
                for name in names:
                    await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            base = sa.engine.make_url(admin_url)
            url, target = (base.set(database=n).render_as_string(hide_password=False) for n in names)
        try:
            started = time.perf_counter()
            await seed(url, work, messages, issues)
            seeded = time.perf_counter() - started
            print(f"[{backend}] seeded {messages} messages, {issues} issues in {seeded:.1f} s", flush=True)
            backups = Backups(url, DirectoryStorage(work / "backups"))
            manifest = await backups.create("daily")
            size = f"{manifest.size / 1e6:.1f} MB stored"
            print(f"[{backend}] backup create : {manifest.seconds:6.2f} s  ({size})", flush=True)
            check = await backups.verify(manifest.id)
            assert check.ok, check.problems
            print(f"[{backend}] backup verify : {check.seconds:6.2f} s", flush=True)
            result = await backups.restore(manifest.id, target_url=target)
            print(
                f"[{backend}] backup restore: {result.seconds:6.2f} s  (into an empty database)", flush=True
            )
            result = await backups.restore(manifest.id, target_url=target)
            over = "over a full one: safety backup first"
            print(f"[{backend}] backup restore: {result.seconds:6.2f} s  ({over})", flush=True)
        finally:
            if backend != "sqlite":
                async with engine.connect() as conn:
                    for name in names:
                        await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--issues", type=int, default=10_000)
    args = parser.parse_args()
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args.messages, args.issues))


if __name__ == "__main__":
    main()
