"""The first minutes of a local install: where the database lives by default, taking the port before
anything is created, refusing to invent an empty database for a command that only reads, and
printing commands the way they can actually be run."""

from __future__ import annotations

import errno
import gc
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path

import platformdirs

APP_NAME = "vibe-ensemble"


class StartupError(Exception):
    """An expected failure before serving; its message says what is wrong and what to do."""


def collect_from_here() -> None:
    """Start-up is over: what it built is frozen (kept for the process's life; the collector's passes
    skip it, so a full one takes a millisecond, not 130-230 ms), and the collector runs from now on.

    `cli.main` turns the cyclic collector off before a command starts: starting builds a large heap
    that lives as long as the process (modules, pydantic models and schemas, routes, statements) and
    makes little garbage, and the collector's passes over it were a sixth of the server's start-up
    CPU. The long-running commands (`serve`, its workers' supervisor, `mcp`) call this once started;
    a short one runs to its end without.
    """
    gc.freeze()
    gc.enable()


# What a server asks for when the hard limit is unlimited (Linux then caps it at fs.nr_open, 1,048,576
# by default), and, when that is refused, macOS's own cap for one process (OPEN_MAX).
_OPEN_FILES_WANTED = (1_048_576, 10_240)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit; returns (before, after).

    Every connection, WebSocket subscriber and database file is an open file. Most Linux desktops
    and many init systems start a process with a soft limit of 1,024 (the hard one is far higher,
    for programs that ask): with it a server stopped accepting connections near a thousand clients
    ("Too many open files"), short of the thousand live subscribers a process is built to hold. The
    hard limit stays what the system set; a worker of `serve --workers N` inherits the raised limit.
    """
    try:
        import resource
    except ImportError:  # not on this platform (Windows): nothing to raise
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = [hard] if hard != resource.RLIM_INFINITY else list(_OPEN_FILES_WANTED)
    for limit in wanted:
        if soft == resource.RLIM_INFINITY or soft >= limit:
            break  # as high already (RLIM_INFINITY is -1: an unlimited one is never lowered)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        except (ValueError, OSError):
            continue  # refused (above the system's cap): try the next, or keep what there is
        return (soft, limit)
    return (soft, soft)


def default_data_dir() -> Path:
    """The platform's per-user data directory (on Linux `$XDG_DATA_HOME/vibe-ensemble`, by default
    `~/.local/share/vibe-ensemble`): the same file whichever directory a command starts in."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def bind(host: str, port: int) -> socket.socket:
    """Take the listening address now, so nothing is created (or printed) for a server that cannot
    listen. The socket is handed to uvicorn."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on host {host!r}: {exc.strerror}; give an address such as 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (another server, or another vibe-ensemble): "
                f"pick another with `make run PORT=8090`, `{command()} serve --port 8090` or VIBE_PORT=8090"
            ) from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def command() -> str:
    """How a printed command runs `vibe-ensemble`, from any directory: the bare name when it is on
    PATH, else its absolute path, quoted (a path relative to here fails once pasted elsewhere; not
    resolved: a virtualenv's python is a symlink)."""
    script = Path(sys.executable).with_name(APP_NAME)
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m vibe_ensemble.cli"
    found = shutil.which(APP_NAME)
    if found and Path(found).resolve() == script.resolve():
        return APP_NAME
    return shlex.quote(os.path.abspath(script))


# A SIGTERM (or Ctrl-C) that arrives while the server starts (imports, migrations) is remembered,
# not fatal: Python's default ends the process at once (exit 143, a migration cut short, no line
# saying why). The server checks `stop_asked()` once started, before it listens, and stops cleanly
# (exit 0); a second signal ends it at once, as it does while serving.
_asked: list[int] = []


def defer_stop_signals() -> None:
    """From now until the server installs its own handlers, SIGTERM and SIGINT ask for a stop."""
    import signal

    def remember(sig: int, frame: object) -> None:
        if _asked:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)  # the second: at once, as the default would have
        _asked.append(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, remember)


def stop_asked() -> int | None:
    """The signal that asked the starting server to stop, if one did."""
    return _asked[0] if _asked else None
