"""PostgreSQL: `vibe_mail_keys` (0018) in PL/pgSQL, whose query is planned once a connection.

The GIN index of mail's project keys (0018) calls the function for every message written. In SQL
its body (it reads from `unnest`, so it is not inlined) was parsed and planned again at every
INSERT: 223 to 233 µs of PostgreSQL's CPU a message insert, against 173 to 183 µs with the same query
in PL/pgSQL, which keeps its plan for the connection (bench/RESULTS.md, forty-first round). The
function gives the same keys, so the index is left as it is: nothing is rebuilt, and the upgrade
takes no longer than replacing a function. SQLite is unchanged.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

from alembic import op

from vibe_ensemble.store.mail_search import keys_function_ddl

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(keys_function_ddl("plpgsql"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(keys_function_ddl("sql"))
