"""PostgreSQL: transaction-level advisory locks that queue one kind of write per project (and the
migrations, store/migrate.py, with project 0).

Each kind has a class key; the lock is (class key, project id), a key space apart from the
single-key event lock in store.events. Take it first in the transaction, before any row lock. On
SQLite the single writer (BEGIN IMMEDIATE) already serialises every write transaction.
"""

from __future__ import annotations

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared

# Lease decisions: a reservation reads the live leases and grants against them.
RESERVATIONS = 0x5645  # "VE"
# Changes to the dependency graph: two updates that together would close a cycle (x on y, y on x)
# each locked the other's issue and then waited for its own, a deadlock rather than the cycle
# refusal; queued, the second sees the first's dependency.
DEPENDENCIES = 0x5644  # "VD"
# Migrations (store/migrate.upgrade, with class key 0): two processes migrating a new database at once
# (`migrate`, `serve --migrate` of two replicas) both created Alembic's table, and one failed with a
# traceback; queued, the second finds the schema at head and has nothing to do.
MIGRATIONS = 0x564D  # "VM"
# A restore replacing the database (`backup restore --force` while servers run): one key, held in the
# restore's session from before it reads what it carries over until that is written into the restored
# tables (store/backup_carry.py). Credential reads (store/credentials.py) take it shared, and are
# refused while it is held: the restored rows hold a token revoked since the backup as valid until
# the carry-over lands.
RESTORE = 0x56494252  # "VIBR": a single key, apart from the event-order and duty locks

_LOCK = Prepared(
    sa.select(
        sa.func.pg_advisory_xact_lock(
            sa.bindparam("c", type_=sa.Integer), sa.bindparam("p", type_=sa.Integer)
        )
    )
)


async def lock_project(conn: Connection, kind: int, project_id: int) -> None:
    """Queue behind every other transaction holding `kind`'s lock on this project until it ends."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"c": kind, "p": project_id % 2_147_483_647})
