"""The store: one server owns a SQLite file, migrations match `tables.py`, readiness follows them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
import structlog.testing
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from vibe_ensemble.api.app import create_app
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.errors import DatabaseUnavailable
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import doctor
from vibe_ensemble.store import faults, knowledge_rank, migrate
from vibe_ensemble.store.database import Database, DatabaseError
from vibe_ensemble.store.sqlite import SqliteEngine
from vibe_ensemble.store.tables import issues, knowledge, metadata

from ..conftest import make_settings

# Full-text search lives outside `tables.py` on purpose (`store/knowledge_rank.py` creates it).
SEARCH_TABLES = ("knowledge_fts", "messages_fts")  # prefixes: one table per project


async def test_a_second_runtime_on_the_same_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}"
    first = Runtime(Settings(database_url=url, data_dir=tmp_path))
    await first.start(apply_migrations=True)
    try:
        second = Runtime(Settings(database_url=url, data_dir=tmp_path))
        with pytest.raises(DatabaseError) as err:
            await second.start()
        message = str(err.value)
        assert f"{tmp_path / 'vibe.db'} is already in use by another Vibe Ensemble server" in message
        assert f"(pid {os.getpid()}; its address is not recorded)" in message  # it said none
        assert "use PostgreSQL to run several replicas" in message
    finally:
        await first.stop()
    # once the owner is gone, the file is free
    third = Runtime(Settings(database_url=url, data_dir=tmp_path))
    await third.start()
    await third.stop()


async def test_a_second_runtime_on_a_hard_link_to_the_file_refuses_to_start(tmp_path: Path) -> None:
    """The owner lock holds the file, not only its name: the same file under another path is owned."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Runtime(
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a' / 'vibe.db'}", data_dir=tmp_path)
    )
    await first.start(apply_migrations=True)
    try:
        os.link(tmp_path / "a" / "vibe.db", tmp_path / "b" / "vibe.db")
        linked = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'b' / 'vibe.db'}", data_dir=tmp_path)
        second = Runtime(linked)
        with pytest.raises(DatabaseError, match="reaches the same file under another path"):
            await second.start()
        assert not (tmp_path / "b" / "vibe.db.lock").read_bytes()  # it named no owner of its own
    finally:
        await first.stop()
    third = Runtime(linked)  # once the owner is gone, the file is free under either name
    await third.start()
    await third.stop()


async def test_an_unmigrated_database_is_refused_with_the_fix(database_url: str, tmp_path: Path) -> None:
    rt = Runtime(Settings(database_url=database_url, data_dir=tmp_path))
    with pytest.raises(
        DatabaseError, match="is not migrated to the current schema: run `vibe-ensemble migrate`"
    ):
        await rt.start()


async def _downgrade(db: Database, revision: str) -> None:
    """Migrate `db` down to `revision` with Alembic's downgrade."""
    from alembic import command

    await db.run_sync(lambda conn: command.downgrade(migrate._config(conn), revision), write=True)


def _diff(conn: Connection) -> list[Any]:
    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and name is not None and name.startswith(SEARCH_TABLES):
            return False
        if type_ == "table" and name == "knowledge_terms":  # PostgreSQL: kept by a trigger (0015)
            return False
        # PostgreSQL: the generated tsvector columns and their GIN indexes
        return not (
            type_ in ("column", "index")
            and name in ("search", "ix_knowledge_search", "ix_messages_search", "ix_messages_search_keys")
        )

    ctx = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "include_object": include, "target_metadata": metadata},
    )
    return list(compare_metadata(ctx, metadata))


async def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    db = Database(database_url)
    try:
        await migrate.upgrade(db)
        assert await db.run_sync(_diff) == []
        names = set(await db.run_sync(lambda c: sa.inspect(c).get_table_names()))
        assert {t.name for t in metadata.sorted_tables} <= names
        if db.is_sqlite:
            assert "knowledge_fts" not in names  # one per project, made with its first entry
        else:
            columns = await db.run_sync(lambda c: sa.inspect(c).get_columns("knowledge"))
            assert "search" in {c["name"] for c in columns}
    finally:
        await db.dispose()


def _old_project(conn: Connection) -> int:
    """Project `p`, written with plain SQL as a test of a migration writes at an older revision."""
    conn.execute(
        sa.text(
            "INSERT INTO projects (slug, name, description, repo, created_at) "
            "VALUES ('p', 'p', '', '', CURRENT_TIMESTAMP)"
        )
    )
    return int(conn.execute(sa.text("SELECT id FROM projects WHERE slug = 'p'")).scalar_one())


async def test_mail_sent_before_0009_gets_its_recipient_names(database_url: str) -> None:
    """Migration 0009 writes each message's recipient names from its recipient rows."""
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0008")

        def old_mail(conn: Connection) -> None:
            pid = _old_project(conn)
            for name in ("cy", "ana", "bo"):
                conn.execute(
                    sa.text(
                        "INSERT INTO agents (project_id, name, role, status, capabilities, program, model,"
                        " description, activity, registered_at, last_seen)"
                        " VALUES (:p, :n, 'worker', 'idle', '[]', '', '', '', '', CURRENT_TIMESTAMP,"
                        " CURRENT_TIMESTAMP)"
                    ),
                    {"p": pid, "n": name},
                )
            for subject in ("to three", "to none"):
                conn.execute(
                    sa.text(
                        "INSERT INTO messages (project_id, sender, subject, body, thread_id, importance,"
                        " ack_required, to_role, broadcast, created_at)"
                        " VALUES (:p, 'ana', :s, 'b', 't', 'normal', false, NULL, false, CURRENT_TIMESTAMP)"
                    ),
                    {"p": pid, "s": subject},
                )
            conn.execute(
                sa.text(
                    "INSERT INTO message_recipients (message_id, agent_id) SELECT m.id, a.id"
                    " FROM messages m, agents a WHERE m.subject = 'to three'"
                )
            )

        await db.run_sync(old_mail, write=True)
        await migrate.upgrade(db)

        def names(conn: Connection) -> dict[str, str]:
            rows = conn.execute(sa.text("SELECT subject, recipient_names FROM messages"))
            return {subject: joined for subject, joined in rows}

        stored = await db.run_sync(names)
        assert sorted(stored["to three"].split(",")) == ["ana", "bo", "cy"]
        assert stored["to none"] == ""
    finally:
        await db.dispose()


async def test_mail_the_release_before_0009_sends_on_the_migrated_schema_shows_its_recipients(
    runtime: Runtime,
) -> None:
    """During a rolling upgrade the release before migration 0009 still runs, on the migrated
    schema, for a while: its mail has recipient rows but an empty `recipient_names`. The inbox
    shows the names from the recipient rows; mail sent since keeps its own."""
    services = runtime.services
    for name in ("ana", "bo", "cy"):
        await services.agents.register(SYSTEM, name=name)
    await services.messages.send(SYSTEM, agent="ana", to=["cy", "bo"], subject="old", body="b")
    await services.messages.send(SYSTEM, agent="ana", to=["bo"], subject="new", body="b")

    def as_the_old_release_wrote_it(conn: Connection) -> None:
        conn.execute(sa.text("UPDATE messages SET recipient_names = '' WHERE subject = 'old'"))

    await runtime.db.run_sync(as_the_old_release_wrote_it, write=True)
    for reader in ("bo", "cy"):
        inbox = await services.messages.fetch_inbox(SYSTEM, agent=reader)
        recipients = {item.message.subject: item.message.recipients for item in inbox.items}
        assert recipients["old"] == ["bo", "cy"], recipients
        if reader == "bo":
            assert recipients["new"] == ["bo"]
        unread = await services.messages.fetch_inbox(SYSTEM, agent=reader, unread_only=True)
        assert unread.items[0].message.recipients == ["bo", "cy"]


async def test_issues_written_before_0011_get_their_label_keys(database_url: str) -> None:
    """Migration 0011 writes each issue's label keys (the labels' case folds) from its labels."""
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0010")

        def old_issues(conn: Connection) -> None:
            pid = _old_project(conn)
            for title, labels in (("mixed", '["Python", "STRASSE", "python"]'), ("none", "[]")):
                conn.execute(
                    sa.text(
                        "INSERT INTO issues (project_id, title, body, status, priority, labels, version,"
                        " created_at, updated_at) VALUES (:p, :t, '', 'open', 'p2', :labels, 1,"
                        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"p": pid, "t": title, "labels": labels},
                )

        await db.run_sync(old_issues, write=True)
        await migrate.upgrade(db)

        def keys(conn: Connection) -> dict[str, object]:
            rows = conn.execute(sa.select(issues.c.title, issues.c.labels, issues.c.label_keys))
            return {title: (labels, label_keys) for title, labels, label_keys in rows}

        stored = await db.run_sync(keys)
        assert stored["mixed"] == (["Python", "STRASSE", "python"], ["python", "strasse"])
        assert stored["none"] == ([], [])
    finally:
        await db.dispose()


async def test_knowledge_written_before_0014_gets_its_tag_keys(database_url: str) -> None:
    """Migration 0014 writes each knowledge entry's tag keys (the tags' case folds) from its tags."""
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0013")

        def old_entries(conn: Connection) -> None:
            pid = _old_project(conn)
            for title, tags in (("mixed", '["Postgres", "STRASSE", "postgres"]'), ("none", "[]")):
                conn.execute(
                    sa.text(
                        "INSERT INTO knowledge (project_id, kind, title, body, tags, issue_ids, author,"
                        " version, created_at, updated_at) VALUES (:p, 'pattern', :t, 'b', :tags, '[]',"
                        " 'ann', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"p": pid, "t": title, "tags": tags},
                )

        await db.run_sync(old_entries, write=True)
        await migrate.upgrade(db)

        def keys(conn: Connection) -> dict[str, object]:
            rows = conn.execute(sa.select(knowledge.c.title, knowledge.c.tags, knowledge.c.tag_keys))
            return {title: (tags, tag_keys) for title, tags, tag_keys in rows}

        stored = await db.run_sync(keys)
        assert stored["mixed"] == (["Postgres", "STRASSE", "postgres"], ["postgres", "strasse"])
        assert stored["none"] == ([], [])
    finally:
        await db.dispose()


async def test_knowledge_written_before_0015_gets_its_search_terms(postgres_url: str) -> None:
    """PostgreSQL: migration 0015 writes each entry's lexemes into `knowledge_terms` (`heading` when
    the title or tags hold one), and from then on the trigger keeps them as entries are edited."""
    db = Database(postgres_url)
    try:
        await migrate.upgrade(db, "0014")

        def old_entry(conn: Connection) -> None:
            _old_project(conn)
            conn.execute(
                sa.text(
                    "INSERT INTO knowledge (project_id, kind, title, body, tags, issue_ids, author,"
                    " version, created_at, updated_at) SELECT id, 'note', 'Lease renewals',"
                    " 'the caches warm', '[\"ops\"]', '[]', 'ann', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
                    " FROM projects"
                )
            )

        def terms(conn: Connection) -> dict[str, bool]:
            rows = conn.execute(sa.text("SELECT term, heading FROM knowledge_terms ORDER BY term"))
            return {term: heading for term, heading in rows}

        await db.run_sync(old_entry, write=True)
        await migrate.upgrade(db)
        expected = {"cach": False, "leas": True, "op": True, "renew": True, "warm": False}
        assert await db.run_sync(terms) == expected
        edit = sa.text("UPDATE knowledge SET body = 'a deadlock', tags = '[]'")
        await db.run_sync(lambda conn: conn.execute(edit), write=True)
        assert await db.run_sync(terms) == {"deadlock": False, "leas": True, "renew": True}
    finally:
        await db.dispose()


async def test_knowledge_written_before_0016_is_found_by_its_kind_and_tags(database_url: str) -> None:
    """Migration 0016 puts each entry's kind and tag keys in the search index (SQLite: columns of the
    project's FTS5 table; PostgreSQL: `knowledge_terms.kind` and `.tag_keys`), an entry an older
    release wrote without keys by its tags as written, and from then on they follow an edit. Its
    downgrade gives back revision 0015's index, which keeps working."""
    db = Database(database_url)
    sqlite = db.is_sqlite
    try:
        await migrate.upgrade(db, "0015")

        def old_entries(conn: Connection) -> int:
            pid = _old_project(conn)
            if sqlite:
                for statement in knowledge_rank.ddl(pid, narrowing=False):  # as revision 0015 had it
                    conn.execute(sa.text(statement))
            for kind, body, tags, keys in (
                ("decision", "renew the lease", '["Ops"]', '["ops"]'),
                ("note", "the lease notes", '["Café"]', None),  # an older release's: no keys
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO knowledge (project_id, kind, title, body, tags, tag_keys, issue_ids,"
                        " author, version, created_at, updated_at) VALUES (:p, :kind, 't', :body, :tags,"
                        " :keys, '[]', 'ann', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"p": pid, "kind": kind, "body": body, "tags": tags, "keys": keys},
                )
            return pid

        pid = await db.run_sync(old_entries, write=True)
        table = knowledge_rank.table_name(pid)

        def of(conn: Connection, kind: str | None = None, tag: str | None = None) -> list[int]:
            """The entries holding `lease`, of the kind or carrying the tag key, as the index has them."""
            if sqlite:
                narrowing = knowledge_rank.filters(kind, [tag] if tag else [])
                match = sa.text(f"SELECT rowid FROM {table} WHERE {table} MATCH :q ORDER BY rowid")  # nosec B608
                return [int(r[0]) for r in conn.execute(match, {"q": " AND ".join([*narrowing, '"lease"'])})]
            found = sa.text(
                "SELECT entry_id FROM knowledge_terms WHERE term = 'leas'"
                " AND (CAST(:kind AS TEXT) IS NULL OR kind = :kind)"
                " AND (CAST(:tag AS TEXT) IS NULL OR tag_keys @> ARRAY[CAST(:tag AS TEXT)]) ORDER BY entry_id"
            )
            return [int(r[0]) for r in conn.execute(found, {"kind": kind, "tag": tag})]

        await migrate.upgrade(db)
        assert await db.run_sync(lambda c: of(c, kind="decision")) == [1]
        assert await db.run_sync(lambda c: of(c, kind="note")) == [2]
        assert await db.run_sync(lambda c: of(c, tag="ops")) == [1]
        assert await db.run_sync(lambda c: of(c, tag="Café")) == [2]  # as written
        edit = sa.text(
            "UPDATE knowledge SET kind = 'pattern', tags = '[\"DB\"]', tag_keys = '[\"db\"]' WHERE id = 1"
        )
        await db.run_sync(lambda conn: conn.execute(edit), write=True)
        assert await db.run_sync(lambda c: of(c, kind="decision")) == []
        assert await db.run_sync(lambda c: of(c, kind="pattern")) == [1]
        assert await db.run_sync(lambda c: of(c, tag="ops")) == []
        assert await db.run_sync(lambda c: of(c, tag="db")) == [1]

        await _downgrade(db, "0015")
        if sqlite:
            found = sa.text(f"SELECT rowid FROM {table} WHERE {table} MATCH '\"lease\"' ORDER BY rowid")  # nosec B608
        else:
            found = sa.text("SELECT entry_id FROM knowledge_terms WHERE term = 'leas' ORDER BY entry_id")
        assert [int(r[0]) for r in await db.run_sync(lambda c: c.execute(found).all())] == [1, 2]
        await migrate.upgrade(db)
        assert await db.run_sync(lambda c: of(c, kind="pattern", tag="db")) == [1]
    finally:
        await db.dispose()


async def test_events_are_ordered_after_commit_from_0017_and_at_commit_again_after_its_downgrade(
    postgres_url: str,
) -> None:
    """PostgreSQL: from migration 0017 an event commits with its provisional id and waits for a
    round (`vibe_events_order_pending()`); the downgrade gives the waiting ones their ids and
    brings back 0008's trigger, which gives each its id at commit; upgrading again takes it away."""
    db = Database(postgres_url)
    insert = sa.text(
        "INSERT INTO events (id, time, project_id, type, actor, payload) "
        "VALUES (-nextval('events_provisional_id_seq'), CURRENT_TIMESTAMP, NULL, :type, 't', '{}')"
    )
    ids = sa.text("SELECT type, id FROM events WHERE type LIKE 'test.%' ORDER BY type")

    async def write(type_: str) -> None:
        await db.run_sync(lambda conn: conn.execute(insert, {"type": type_}), write=True)

    def of(conn: Connection) -> dict[str, int]:
        return {type_: int(id_) for type_, id_ in conn.execute(ids)}

    try:
        await migrate.upgrade(db)
        await write("test.a")
        assert (await db.run_sync(of))["test.a"] < 0  # committed, waiting for a round

        await _downgrade(db, "0016")
        ordered = await db.run_sync(of)
        assert ordered["test.a"] > 0
        await write("test.b")
        at_commit = await db.run_sync(of)
        assert at_commit["test.b"] > ordered["test.a"]  # given by the trigger, at commit

        await migrate.upgrade(db)
        await write("test.c")
        assert (await db.run_sync(of))["test.c"] < 0
        round_ = sa.text("SELECT vibe_events_order_pending()")
        newest = await db.run_sync(lambda conn: conn.execute(round_).scalar_one(), write=True)
        assert await db.run_sync(of) == {**at_commit, "test.c": newest}
        assert newest > at_commit["test.b"]
    finally:
        await db.dispose()


async def test_mail_written_before_0018_is_in_its_index_of_project_keys_and_its_downgrade_restores_0006_s(
    postgres_url: str,
) -> None:
    """PostgreSQL: migration 0018 indexes every message's words keyed by its project
    (`vibe_mail_keys`), the mail before it too, and drops 0006's index of `search`; its downgrade
    brings that index back and takes the keys away."""
    db = Database(postgres_url)
    indexes = sa.text(
        "SELECT indexname FROM pg_indexes "
        "WHERE tablename = 'messages' AND indexname LIKE 'ix_messages_search%'"
    )

    def index_names(conn: Connection) -> set[str]:
        return set(conn.execute(indexes).scalars())

    try:
        await migrate.upgrade(db, "0017")

        def old_mail(conn: Connection) -> int:
            project_id = _old_project(conn)
            conn.execute(
                sa.text(
                    "INSERT INTO messages (project_id, sender, subject, body, thread_id, importance, "
                    "ack_required, broadcast, created_at, recipient_names) VALUES (:p, 'a', 'Zeppelins', "
                    "'the zeppelin lands', 't', 'normal', false, false, CURRENT_TIMESTAMP, '')"
                ),
                {"p": project_id},
            )
            return project_id

        project_id = await db.run_sync(old_mail, write=True)
        assert await db.run_sync(index_names) == {"ix_messages_search"}
        await migrate.upgrade(db)
        assert await db.run_sync(index_names) == {"ix_messages_search_keys"}
        keyed = sa.text("SELECT count(*) FROM messages WHERE vibe_mail_keys(project_id, search) && :keys")
        for keys, found in (([f"{project_id} zeppelin"], 1), ([f"{project_id + 1} zeppelin"], 0)):
            assert (
                await db.run_sync(lambda conn, k=keys: conn.execute(keyed, {"keys": k}).scalar_one()) == found
            )

        await _downgrade(db, "0017")
        assert await db.run_sync(index_names) == {"ix_messages_search"}
        gone = sa.text("SELECT count(*) FROM pg_proc WHERE proname = 'vibe_mail_keys'")
        assert await db.run_sync(lambda conn: conn.execute(gone).scalar_one()) == 0
    finally:
        await db.dispose()


async def test_0019_writes_the_mail_keys_in_pl_pgsql_the_same_keys_the_index_unchanged(
    postgres_url: str,
) -> None:
    """PostgreSQL: migration 0019 replaces 0018's SQL `vibe_mail_keys` by the same query in PL/pgSQL
    (planned once a connection, not at every INSERT). The keys of mail written before and after are
    those 0018 gave, the index is the same one (not rebuilt) and still finds them; the downgrade
    brings the SQL function back."""
    db = Database(postgres_url)
    language = sa.text(
        "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE p.proname = 'vibe_mail_keys'"
    )
    index = sa.text("SELECT indexrelid FROM pg_index WHERE indexrelid = 'ix_messages_search_keys'::regclass")
    every_key = sa.text("SELECT id, vibe_mail_keys(project_id, search) FROM messages ORDER BY id")
    keyed = sa.text("SELECT id FROM messages WHERE vibe_mail_keys(project_id, search) && :keys ORDER BY id")

    def send(conn: Connection, project_id: int, subject: str, body: str) -> int:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO messages (project_id, sender, subject, body, thread_id, importance, "
                    "ack_required, broadcast, created_at, recipient_names) VALUES (:p, 'a', :s, :b, 't', "
                    "'normal', false, false, CURRENT_TIMESTAMP, '') RETURNING id"
                ),
                {"p": project_id, "s": subject, "b": body},
            ).scalar_one()
        )

    try:
        await migrate.upgrade(db, "0018")
        project_id = await db.run_sync(_old_project, write=True)
        old = await db.run_sync(lambda c: send(c, project_id, "Zeppelins", "the zeppelin lands"), write=True)
        keys_before = await db.run_sync(lambda c: list(c.execute(every_key)))
        index_before = await db.run_sync(lambda c: c.execute(index).scalar_one())
        assert await db.run_sync(lambda c: c.execute(language).scalar_one()) == "sql"

        await migrate.upgrade(db)
        assert await db.run_sync(lambda c: c.execute(language).scalar_one()) == "plpgsql"
        assert await db.run_sync(lambda c: list(c.execute(every_key))) == keys_before
        assert await db.run_sync(lambda c: c.execute(index).scalar_one()) == index_before
        new = await db.run_sync(
            lambda c: send(c, project_id, "Zeppelin news", "zeppelins and blimps"), write=True
        )
        keys_after = await db.run_sync(lambda c: list(c.execute(every_key)))
        assert keys_after[-1] == (
            new,
            [f"{project_id} blimp", f"{project_id} news", f"{project_id} zeppelin"],
        )
        for keys, found in (([f"{project_id} zeppelin"], [old, new]), ([f"{project_id} blimp"], [new])):
            rows = await db.run_sync(lambda c, k=keys: list(c.execute(keyed, {"keys": k}).scalars()))
            assert rows == found

        await _downgrade(db, "0018")
        assert await db.run_sync(lambda c: c.execute(language).scalar_one()) == "sql"
        assert await db.run_sync(lambda c: c.execute(index).scalar_one()) == index_before
    finally:
        await db.dispose()


async def test_0020_an_event_round_reads_the_primary_key_whatever_the_statistics(postgres_url: str) -> None:
    """PostgreSQL: from 0020 the sequencer's round finds the waiting events by an index scan of the
    primary key, on an event log whose statistics were never gathered; 0019's function read the
    whole table there (a sequential scan, more rows each round as the log grows). Counted by
    PostgreSQL's statistics of the round's own transaction."""
    db = Database(postgres_url)
    waiting = sa.text(
        "INSERT INTO events (id, time, project_id, type, actor, payload) "
        "SELECT -nextval('events_provisional_id_seq'), CURRENT_TIMESTAMP, NULL, 'agent.seen', 'a', '{}' "
        "FROM generate_series(1, 1000)"
    )
    scans = sa.text("SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'")

    def round_of_1000(conn: Connection) -> tuple[int, int, int, int]:
        """The newest id given by a round of 1,000 waiting events, the table's sequential and index
        scans in that round, and the events still waiting after it."""
        conn.execute(waiting)
        seq_before, idx_before = conn.execute(scans).one()
        newest = conn.execute(sa.text("SELECT vibe_events_order_pending()")).scalar_one()
        seq, idx = conn.execute(scans).one()
        left = conn.execute(sa.text("SELECT count(*) FROM events WHERE id < 0")).scalar_one()
        return int(newest), int(seq - seq_before), int(idx - idx_before), int(left)

    try:
        await migrate.upgrade(db)
        await db.run_sync(
            lambda c: c.execute(sa.text("ALTER TABLE events SET (autovacuum_enabled = false)")), write=True
        )
        # 1,000 ordered by one round, then one index scan of the key and 1,000 updates by it
        assert await db.run_sync(round_of_1000, write=True) == (1000, 0, 1001, 0)
        assert await db.run_sync(round_of_1000, write=True) == (2000, 0, 1001, 0)

        await _downgrade(db, "0019")
        newest, seq, _, left = await db.run_sync(round_of_1000, write=True)
        assert (newest, left) == (3000, 0)
        assert seq == 1  # 0019's plan, with no statistics: the whole table read
    finally:
        await db.dispose()


async def test_knowledge_tags_written_escaped_before_0013_are_found_by_search(tmp_path: Path) -> None:
    """SQLite: tags were written as ASCII-escaped JSON and FTS5 indexed that text, so `café` and
    `名古屋` in a tag were never found by a search. Migration 0013 rewrites them as written, through
    the index's triggers: both are found after it, and the entry is in the index once."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}")
    try:
        await migrate.upgrade(db, "0012")

        def old_entry(conn: Connection) -> int:
            pid = _old_project(conn)
            for statement in knowledge_rank.ddl(pid, narrowing=False):  # as revision 0012 had it
                conn.execute(sa.text(statement))
            conn.execute(
                sa.text(
                    "INSERT INTO knowledge (project_id, kind, title, body, tags, issue_ids, author, version,"
                    " created_at, updated_at) VALUES (:p, 'note', 't', 'travel notes', :tags, '[]', 'ann', 1,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"p": pid, "tags": json.dumps(["café", "名古屋"])},  # escaped, as SQLAlchemy wrote it
            )
            return pid

        pid = await db.run_sync(old_entry, write=True)
        table = knowledge_rank.table_name(pid)

        def found(conn: Connection, word: str) -> list[int]:
            match = sa.text(f"SELECT rowid FROM {table} WHERE {table} MATCH :q")  # nosec B608
            return [int(r[0]) for r in conn.execute(match, {"q": f'"{word}"'})]

        assert await db.run_sync(lambda c: found(c, "café")) == []  # the defect, before 0013
        await migrate.upgrade(db)
        for word in ("café", "名古屋", "travel"):
            assert await db.run_sync(lambda c, w=word: found(c, w)) == [1], word
    finally:
        await db.dispose()


def test_the_known_head_is_the_head_of_the_migration_scripts() -> None:
    # Serving checks the revision against HEAD without Alembic: a new migration must move HEAD.
    assert migrate.head_revision() == migrate.HEAD
    assert migrate.KNOWN[0] == "0001" and migrate.KNOWN[-1] == migrate.HEAD
    assert len(migrate.KNOWN) == int(migrate.HEAD)  # one script a revision, numbered in order


async def test_is_current_follows_the_revision(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await migrate.current_revision(db) is None
        assert not await migrate.is_current(db)
        await migrate.upgrade(db)
        assert await migrate.current_revision(db) == migrate.head_revision()
        # The plain query reads what Alembic reads.
        alembic_says = await db.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        assert alembic_says == await migrate.current_revision(db)
        assert await migrate.is_current(db)
        await migrate.upgrade(db)  # idempotent
        assert await migrate.is_current(db)
    finally:
        await db.dispose()


async def test_readyz_reports_pending_migrations(runtime: Runtime) -> None:
    app = create_app(runtime)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": runtime.db.dialect}
        async with runtime.db.write() as conn:
            older = {"v": migrate.KNOWN[-2]}
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), older)
        pending = await client.get("/readyz")
        assert pending.status_code == 503
        assert pending.json() == {"status": "unavailable", "database": "migrations pending"}
        async with runtime.db.write() as conn:  # a revision no release of ours made
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'abc123'"))
        unknown = await client.get("/readyz")
        assert unknown.status_code == 503
        assert unknown.json() == {"status": "unavailable", "database": "schema unknown to this program"}
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_stays_ready_on_the_next_releases_schema(runtime: Runtime) -> None:
    """A rollout migrates before it replaces the running pods: they stay in traffic on the newer
    schema (migrations keep the previous release working), saying so, and log it once."""
    app = create_app(runtime)
    newer = str(int(migrate.HEAD) + 1).zfill(len(migrate.HEAD))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as client:
        async with runtime.db.write() as conn:  # the next release's migration Job ran
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": newer})
        with structlog.testing.capture_logs() as logs:
            answers = [await client.get("/readyz") for _ in range(3)]
        for answer in answers:
            assert answer.status_code == 200
            assert answer.json() == {"status": "ready", "database": "schema newer than this program"}
        warnings = [e for e in logs if e["event"] == "schema_newer_than_program"]
        assert warnings == [
            {
                "event": "schema_newer_than_program",
                "log_level": "warning",
                "revision": newer,
                "newest_known": migrate.HEAD,
            }
        ]


async def test_readyz_is_unavailable_while_another_process_holds_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads go on beside another process's SQLite write lock; writes are refused, and /readyz says
    so until one goes through (its own write probe: a replica out of traffic gets no writes)."""
    monkeypatch.setattr(faults, "FAULTS", faults.FaultLog())
    rt = Runtime(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}", tmp_path))
    await rt.start(apply_migrations=True)
    try:
        monkeypatch.setattr(SqliteEngine, "BUSY_RETRY_S", 0.2)  # give up on the lock soon
        other = sqlite3.connect(tmp_path / "vibe.db", isolation_level=None)
        transport = httpx2.ASGITransport(app=create_app(rt))
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/readyz")).status_code == 200
            other.execute("BEGIN IMMEDIATE")  # another process takes the write lock and keeps it
            with pytest.raises(DatabaseUnavailable):
                await rt.services.issues.create(SYSTEM, title="refused")
            assert await rt.services.issues.list(SYSTEM) is not None  # a read still works…
            refused = await client.get("/readyz")  # …but the replica is not ready for writes
            assert refused.status_code == 503
            assert refused.json() == {"status": "unavailable", "database": "writes refused"}
            other.execute("ROLLBACK")
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and not faults.FAULTS.unwritable
            assert (await rt.services.issues.create(SYSTEM, title="after")).title == "after"
        other.close()
    finally:
        await rt.stop()


async def test_writes_queued_behind_another_process_lock_give_up_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes queued behind the one waiting out another process's lock are held up by the same lock:
    each gives up once the lock has been held `BUSY_RETRY_S`, not that long after its own turn came
    (the k-th waited k times the bound)."""
    monkeypatch.setattr(faults, "FAULTS", faults.FaultLog())
    rt = Runtime(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}", tmp_path))
    await rt.start(apply_migrations=True)
    try:
        monkeypatch.setattr(SqliteEngine, "BUSY_RETRY_S", 0.5)
        other = sqlite3.connect(tmp_path / "vibe.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()

        async def refused_after(title: str) -> float:
            started = loop.time()
            with pytest.raises(DatabaseUnavailable):
                await rt.services.issues.create(SYSTEM, title=title)
            return loop.time() - started

        with structlog.testing.capture_logs():  # the outage's first line, unrendered: no time of its own
            waits = await asyncio.gather(*(refused_after(f"queued {i}") for i in range(4)))
        # together, not 0.5 s more for each in turn (before: 0.5, 1.0, 1.5 and 2.0 s); the margins are
        # wide for a loaded machine (it took 1.04 s once under CI's load, all four within 1 ms)
        assert max(waits) - min(waits) < 0.25, waits
        assert max(waits) < 0.5 * 3, waits
        other.execute("ROLLBACK")
        other.close()
        assert (await rt.services.issues.create(SYSTEM, title="after")).title == "after"
        # the lock met again later is waited out for the whole bound again
        other = sqlite3.connect(tmp_path / "vibe.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert await refused_after("again") >= 0.5
        other.execute("ROLLBACK")
        other.close()
    finally:
        await rt.stop()


async def test_the_sqlite_files_and_new_directories_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    runtime = Runtime(Settings(data_dir=data))
    await runtime.start(apply_migrations=True)
    try:
        await runtime.services.projects.list(SYSTEM)
        names = {p.name: p for p in data.iterdir()}
        assert {"vibe.db", "vibe.db-wal"} <= set(names)
        for path in names.values():
            assert oct(path.stat().st_mode & 0o777) == oct(0o600), path.name
        for directory in (data, data.parent):
            assert oct(directory.stat().st_mode & 0o777) == oct(0o700), directory
    finally:
        await runtime.stop()


async def test_login_from_an_opaque_origin_is_refused(runtime: Runtime) -> None:
    """Login CSRF: on a plain-HTTP host name browsers send no Sec-Fetch-Site, and a form posted
    from another site (or a sandboxed frame) says `Origin: null`; our own pages send our origin."""
    runtime.settings.allowed_hosts = ["vibe.example.test"]  # the host name this server is reached by
    app = create_app(runtime)
    admin = await runtime.bootstrap_admin_token()
    assert admin is not None
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://vibe.example.test") as client:
        forged = await client.post("/login", data={"token": admin}, headers={"Origin": "null"})
        assert forged.status_code == 403 and "another site" in forged.text
        assert "vibe_session" not in forged.headers.get("set-cookie", "")
        own = await client.post(
            "/login", data={"token": admin}, headers={"Origin": "http://vibe.example.test"}
        )
        assert own.status_code == 303 and own.headers["location"] == "/"
        page = await client.get("/login")
        assert page.headers["referrer-policy"] == "same-origin"


async def test_readyz_answers_within_its_bound_when_the_cut_off_read_is_slow_to_end(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that stops answering: the revision read is cut off at READ_PROBE_S, but ending it
    (a rollback, a close on a connection that does not answer) took as long again, and /readyz
    answered at twice its bound, past the kubelet's timeout. It answers 503 at its bound; the
    cut-off read ends in the background."""
    from vibe_ensemble.api import app as app_module

    ended = asyncio.Event()

    async def hung(_db: object, *, bound_s: float) -> str:
        try:
            async with asyncio.timeout(bound_s):  # as the real read is bounded
                await asyncio.sleep(3600)  # the database never answers
        except (TimeoutError, asyncio.CancelledError):
            await asyncio.sleep(1.0)  # the rollback and the close, themselves waiting on the network
            ended.set()
            raise
        return migrate.HEAD

    monkeypatch.setattr(app_module, "READ_PROBE_S", 0.05)
    monkeypatch.setattr(migrate, "current_revision", hung)
    app = create_app(runtime)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as client:
        answer = await client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["database"] == "unreachable"
        assert not ended.is_set()  # answered before the cut-off read had ended
        await asyncio.wait_for(ended.wait(), 10)


async def test_several_schema_revisions_are_a_clear_refusal(runtime: Runtime) -> None:
    """Two rows in alembic_version made every command end in a traceback (RuntimeError)."""
    async with runtime.db.write() as conn:
        await conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES ('0009')"))
    with pytest.raises(DatabaseError, match=r"several schema revisions \(.*\) in its alembic_version"):
        await migrate.current_revision(runtime.db)


@pytest.mark.postgres
async def test_a_role_without_rights_on_the_tables_is_told_what_to_grant(
    postgres_url: str, tmp_path: Path
) -> None:
    """A role that logs in but was never granted the tables `migrate` made: every command printed
    tracebacks (`permission denied for table alembic_version`), `doctor --json` no JSON."""
    owner = Database(postgres_url)
    await migrate.upgrade(owner)
    role = f"vibe_no_rights_{secrets.token_hex(3)}"
    async with owner.write() as conn:
        await conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    url = sa.engine.make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    try:
        db = Database(url)
        try:
            with pytest.raises(DatabaseError, match="the database role may not use the schema's tables"):
                await migrate.current_revision(db)
        finally:
            await db.dispose()
        found = {f.check: f for f in await doctor.run_checks(make_settings(url, tmp_path))}
        assert found["migrations"].status == "fail"
        assert "permission denied for table alembic_version" in found["migrations"].detail
        assert "GRANT SELECT, INSERT, UPDATE, DELETE" in found["migrations"].detail
    finally:
        async with owner.write() as conn:
            await conn.execute(sa.text(f"DROP ROLE {role}"))
        await owner.dispose()


async def test_migrations_started_at_once_on_a_new_postgresql_database_all_succeed(postgres_url: str) -> None:
    """Two replicas' `serve --migrate` (or three `migrate`s) on a new database at once: each created
    Alembic's table and all but one failed with a traceback (a unique violation in PostgreSQL's
    catalogue; in one process they hung). They queue now: one migrates, the others find the schema
    at head."""
    dbs = [Database(postgres_url) for _ in range(3)]
    try:
        await asyncio.wait_for(asyncio.gather(*(migrate.upgrade(db) for db in dbs)), 60)
        assert {await migrate.current_revision(db) for db in dbs} == {migrate.HEAD}
    finally:
        for db in dbs:
            await db.dispose()
