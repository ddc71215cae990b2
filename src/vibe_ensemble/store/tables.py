"""SQLAlchemy Core tables for the whole domain (DESIGN.md §1).

The Alembic migrations in `store/migrations` create exactly these; a test checks
that the migrated schema and this metadata agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# A 64-bit id that is still SQLite's rowid alias (so it autoincrements there).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return _utc(value)

    def result_processor(
        self, dialect: sa.Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            # SQLite's text, read in one call: SQLAlchemy's would be three (its own processor, which
            # is `datetime.fromisoformat` too, then `process_result_value`), for every row of a page.
            return _utc_from_text
        return super().result_processor(dialect, coltype)


def _utc_from_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    return _utc(datetime.fromisoformat(value))


def _utc(value: datetime) -> datetime:
    """`value` in UTC; a naive one is taken to be UTC already (how SQLite stores them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_array_contains(
    dialect: str, column: sa.ColumnElement[Any], value: str | sa.BindParameter[str]
) -> sa.ColumnElement[bool]:
    """True where the JSON array in `column` holds `value`, a string or a string parameter (JSONB `@>`
    on PostgreSQL, json_each on SQLite)."""
    if dialect == "postgresql":
        return column.op("@>")(sa.func.jsonb_build_array(value))
    each = sa.func.json_each(column).table_valued("value")
    return sa.select(each.c.value).where(each.c.value == value).exists()


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def _fk(
    name: str, target: str, *, nullable: bool = False, ondelete: str | None = "CASCADE"
) -> sa.Column[int]:
    return sa.Column(name, ID, sa.ForeignKey(target, ondelete=ondelete), nullable=nullable)


projects = sa.Table(
    "projects",
    metadata,
    _id(),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("repo", sa.String(1000), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

agents = sa.Table(
    "agents",
    metadata,
    _id(),
    _fk("project_id", "projects.id"),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # the status an agent had when the presence sweep set it offline, which it returns to when heard
    # from again (migration 0012); NULL: idle
    sa.Column("resume_status", sa.String(16), nullable=True),
    sa.Column("capabilities", JSONType, nullable=False),
    sa.Column("program", sa.String(200), nullable=False, server_default=""),
    sa.Column("model", sa.String(200), nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("activity", sa.Text, nullable=False, server_default=""),
    sa.Column("registered_at", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("retired_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("project_id", "name"),
)

issues = sa.Table(
    "issues",
    metadata,
    _id(),
    _fk("project_id", "projects.id"),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.String(4), nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    # the labels' case folds (domain/rules.label_keys), what capabilities and the label filter match;
    # NULL for an issue the release before migration 0011 wrote (its labels are matched as written)
    sa.Column("label_keys", JSONType, nullable=True),
    _fk("assignee_id", "agents.id", nullable=True, ondelete="SET NULL"),
    _fk("parent_id", "issues.id", nullable=True, ondelete="SET NULL"),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("resolution", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.Index(None, "project_id", "status"),
    sa.Index(None, "assignee_id"),
    sa.Index(None, "project_id", "status", "updated_at"),  # the board's newest finished issues
    # The ready list's order: it walks a project's open issues best first and stops at the page.
    sa.Index(None, "project_id", "status", "priority", "id"),
)

issue_dependencies = sa.Table(
    "issue_dependencies",
    metadata,
    _fk("issue_id", "issues.id"),
    _fk("depends_on_id", "issues.id"),
    sa.PrimaryKeyConstraint("issue_id", "depends_on_id"),
    sa.Index(None, "depends_on_id"),
)

comments = sa.Table(
    "comments",
    metadata,
    _id(),
    _fk("issue_id", "issues.id"),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "issue_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    _id(),
    _fk("project_id", "projects.id"),
    sa.Column("sender", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("thread_id", sa.String(200), nullable=False),
    sa.Column("importance", sa.String(8), nullable=False),
    sa.Column("ack_required", sa.Boolean, nullable=False),
    sa.Column("to_role", sa.String(16), nullable=True),
    sa.Column("broadcast", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # who it went to, the names joined by commas (a name never holds one: domain/rules.py), written
    # when it is sent: recipients never change and agents are never renamed (migration 0009)
    sa.Column("recipient_names", sa.Text, nullable=False, server_default=""),
    sa.Index(None, "project_id", "thread_id"),
    # the project's mail newest first (the thread list walks it and stops at its page)
    sa.Index(None, "project_id", "id"),
    # mail still waiting for acknowledgements (the dashboard's "Needs attention"): a partial index
    sa.Index(
        "ix_messages_ack_required",
        "project_id",
        "created_at",
        sqlite_where=sa.text("ack_required"),
        postgresql_where=sa.text("ack_required"),
    ),
)

message_recipients = sa.Table(
    "message_recipients",
    metadata,
    _fk("message_id", "messages.id"),
    _fk("agent_id", "agents.id"),
    sa.Column("read_at", UTCDateTime, nullable=True),
    sa.Column("acked_at", UTCDateTime, nullable=True),
    sa.PrimaryKeyConstraint("message_id", "agent_id"),
    sa.Index(None, "agent_id", "message_id"),
    # an agent's unread mail (its count, the unread page): read without touching what was read
    sa.Index(
        "ix_message_recipients_unread",
        "agent_id",
        "message_id",
        sqlite_where=sa.text("read_at IS NULL"),
        postgresql_where=sa.text("read_at IS NULL"),
    ),
)

reservations = sa.Table(
    "reservations",
    metadata,
    _id(),
    _fk("project_id", "projects.id"),
    _fk("agent_id", "agents.id"),
    sa.Column("pattern", sa.String(1000), nullable=False),
    sa.Column("exclusive", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("released_at", UTCDateTime, nullable=True),
    _fk("issue_id", "issues.id", nullable=True, ondelete="SET NULL"),  # the issue the lease serves
    sa.Index(None, "project_id", "released_at", "expires_at"),
    sa.Index(None, "agent_id"),
    sa.Index(None, "issue_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    _fk("project_id", "projects.id"),
    _fk("agent_id", "agents.id"),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("response", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("project_id", "agent_id", "operation", "key"),
)

knowledge = sa.Table(
    "knowledge",
    metadata,
    _id(),
    _fk("project_id", "projects.id"),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("issue_ids", JSONType, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # the tags' case folds (domain/rules.label_keys), what the tag filter matches; NULL for an entry
    # the release before migration 0014 wrote (its tags are matched as written)
    sa.Column("tag_keys", JSONType, nullable=True),
    sa.Index(None, "project_id", "kind"),
)

knowledge_versions = sa.Table(
    "knowledge_versions",
    metadata,
    _fk("knowledge_id", "knowledge.id"),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("issue_ids", JSONType, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("knowledge_id", "version"),
)

events = sa.Table(
    "events",
    metadata,
    _id(),
    sa.Column("time", UTCDateTime, nullable=False),
    _fk("project_id", "projects.id", nullable=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Index(None, "project_id", "id"),
    sa.Index(None, "project_id", "type", "id"),  # one kind of event, newest first (refusals)
)

credentials = sa.Table(
    "credentials",
    metadata,
    _id(),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("role", sa.String(16), nullable=False),
    _fk("project_id", "projects.id", nullable=True),
    sa.Column("agent_name", sa.String(64), nullable=True),
    sa.Column("tool_profile", sa.String(16), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
)

# Dashboard sessions ended by a logout before their expiry (api/web/session.py): a session cookie is
# signed, not stored, so a copy of it would work on until it expires unless its end is written down.
# Kept by the SHA-256 of the cookie, until the session would have expired anyway.
ended_sessions = sa.Table(
    "ended_sessions",
    metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("credential_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=False),
    sa.Index(None, "expires_at"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    _id(),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("remote", sa.String(200), nullable=False, server_default=""),
    sa.Column("details", JSONType, nullable=False),
    sa.Index(None, "time"),
)
