"""The owner lock of a SQLite file records who owns it: the pid, what process it is, and the MCP URL a
server answers at; whoever meets the lock is told that, or that the address is not recorded (a lock
written by an older release holds the pid alone). tests/e2e/test_owner_lock.py runs the real
processes."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vibe_ensemble.ops.config import Settings
from vibe_ensemble.store.database import DatabaseInUse, Owner, OwnerLock

URL = "http://127.0.0.1:18555/mcp"


@contextmanager
def held(lock_file: Path, content: bytes) -> Iterator[None]:
    """`lock_file` locked by this process, holding `content`: the owner another process meets."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, content)
        yield
    finally:
        os.close(fd)


def refusal(db: Path) -> DatabaseInUse:
    lock = OwnerLock(db)
    with pytest.raises(DatabaseInUse) as caught:
        lock.acquire()
    return caught.value


def test_a_lock_an_older_release_wrote_is_its_pid_alone() -> None:
    assert Owner.parse("4242") == Owner(pid=4242)
    assert Owner.parse("4242\n") == Owner(pid=4242)
    assert Owner(pid=4242).describe() == "(pid 4242; its address is not recorded)"


def test_a_server_records_its_pid_process_and_mcp_url() -> None:
    owner = Owner(pid=4242, process="serve", mcp_url=URL)
    assert Owner.parse(owner.line()) == owner
    assert owner.describe() == f"(pid 4242: `vibe-ensemble serve`, MCP at {URL})"
    # An older release reads the first 64 bytes as "the pid", stripped: the URL is in them, readable.
    older_view = owner.line().encode()[:64].decode().strip()
    assert older_view.startswith("4242 ") and URL in older_view and "\n" not in older_view
    stdio = Owner(pid=7, process="mcp")
    assert Owner.parse(stdio.line()) == stdio
    assert stdio.describe() == "(pid 7: `vibe-ensemble mcp` on stdio, which has no URL)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Owner()),
        ("another process", Owner()),
        ("12x mcp_url=" + URL, Owner(mcp_url=URL)),
        ("5 process=bogus mcp_url=javascript:alert(1)", Owner(pid=5)),
        ("5 mcp_url=http://\x1b[31mevil/mcp process=serve", Owner(pid=5, process="serve")),
        ("5 mcp_url=http:///mcp", Owner(pid=5)),  # no host
        ("5 mcp_url=http://[::1/mcp", Owner(pid=5)),  # no URL at all
        ("5 future=thing mcp_url=" + URL, Owner(pid=5, mcp_url=URL)),  # a later release's word, skipped
        ("0", Owner()),
        ("9" * 30, Owner()),
    ],
)
def test_what_a_lock_file_holds_is_read_as_data(text: str, expected: Owner) -> None:
    assert Owner.parse(text) == expected


def test_a_url_one_word_cannot_hold_is_not_written() -> None:
    """A VIBE_PUBLIC_URL with a space would split the line: the owner's address is then unknown."""
    line = Owner(pid=5, process="serve", mcp_url="http://vibe example/mcp").line()
    assert Owner.parse(line) == Owner(pid=5, process="serve")


def test_a_lock_without_a_pid_says_so() -> None:
    assert Owner().describe() == "(its pid and address are not recorded)"


def test_meeting_a_servers_lock_names_its_pid_and_url(tmp_path: Path) -> None:
    db = tmp_path / "vibe.db"
    with held(tmp_path / "vibe.db.lock", Owner(pid=4242, process="serve", mcp_url=URL).line().encode()):
        met = refusal(db)
    assert met.owner == Owner(pid=4242, process="serve", mcp_url=URL)
    assert str(met).startswith(
        f"{db} is already in use by another Vibe Ensemble server (pid 4242: `vibe-ensemble serve`, MCP at "
        f"{URL}). One server owns a SQLite file"
    )


def test_meeting_an_older_releases_lock_says_the_address_is_not_recorded(tmp_path: Path) -> None:
    db = tmp_path / "vibe.db"
    with held(tmp_path / "vibe.db.lock", b"4242"):
        met = refusal(db)
    assert met.owner == Owner(pid=4242)
    assert "(pid 4242; its address is not recorded)" in str(met)
    assert "8080" not in str(met)


def test_the_owner_lock_writes_what_it_is_given_and_its_own_pid(tmp_path: Path) -> None:
    lock = OwnerLock(tmp_path / "vibe.db")
    lock.acquire(Owner(process="serve", mcp_url=URL))
    try:
        written = (tmp_path / "vibe.db.lock").read_text()
        assert Owner.parse(written) == Owner(pid=os.getpid(), process="serve", mcp_url=URL)
    finally:
        lock.release()
    bare = OwnerLock(tmp_path / "other.db")
    bare.acquire()  # a process that says nothing of itself writes what older releases wrote: its pid
    try:
        assert (tmp_path / "other.db.lock").read_text().strip() == str(os.getpid())
    finally:
        bare.release()


@pytest.mark.parametrize(
    ("host", "port", "public_url", "expected"),
    [
        ("127.0.0.1", 18555, None, "http://127.0.0.1:18555/mcp"),
        ("0.0.0.0", 18555, None, "http://127.0.0.1:18555/mcp"),  # every address: connect to loopback
        ("::", 18555, None, "http://[::1]:18555/mcp"),
        ("::1", 18555, None, "http://[::1]:18555/mcp"),
        ("localhost", 18555, None, "http://localhost:18555/mcp"),
        ("0.0.0.0", 18555, "https://vibe.example.com/team/", "https://vibe.example.com/team/mcp"),
    ],
)
def test_the_mcp_url_a_client_connects_to(
    host: str, port: int, public_url: str | None, expected: str
) -> None:
    settings = Settings(host=host, port=port, public_url=public_url)
    assert settings.mcp_url == expected
