"""Starts `vibe-ensemble …` processes (servers and CLI commands) with their modules already imported.

    python tests/zygote.py EXITS_DIR        (run by tests/support.py, one per test process)

A server process spends about a second of CPU importing the MCP SDK, FastAPI, SQLAlchemy and our own
modules before it does anything, a CLI command half a second, and the suite starts about three
hundred of them. This process imports them once, then reads requests, one JSON line each on stdin
(`{"argv", "env", "cwd", "stdin", "stdout", "stderr"}`, the streams as file paths), and for each
forks a child that runs the command line as CPython would run `python -m vibe_ensemble.cli ARGS`
or the `vibe-ensemble` console script: its own process, environment, working directory and
streams, the command's own entry point, and a normal interpreter exit (atexit handlers run). It
answers each request with the child's pid (`{"pid": N}`); when a child ends, its exit status, as
`subprocess.Popen.returncode` gives it, is written to EXITS_DIR/PID. When stdin closes (the test
process ended), children still running are killed.

Only what is the same in every process is imported here: nothing reads the environment or
configures anything at import. Commands that depend on what was imported when (`serve --workers`,
which must choose the metrics directory before prometheus_client is imported; interpreter options
such as `-X importtime`; what tests/unit/test_cli_start.py checks a start imports) are never sent
here: tests/support.py starts those as fresh interpreters.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from vibe_ensemble.cli import GROUPS

# What a serve imports (the dashboard's pages and, for --migrate or PostgreSQL, alembic and asyncpg
# too), and every command group's module (cli/__init__.GROUPS)
PRELOADED = (
    "vibe_ensemble.cli.serve",
    "vibe_ensemble.cli.server",
    "vibe_ensemble.api.app",
    "vibe_ensemble.api.web.render",
    "vibe_ensemble.store.migrate",
    "vibe_ensemble.store.postgres",
    *(name if "." in name else f"vibe_ensemble.cli.{name}" for name, _ in GROUPS.values()),
)

# The modules (and their submodules) that read the environment when imported
ENVIRONMENT_AT_IMPORT = ("vibe_ensemble.cli", "vibe_ensemble.guard.cli", "typer.rich_utils")

CHILDREN: set[int] = set()


def reap(exits: Path) -> None:
    """Record the exit status of every child that has ended (SIGCHLD)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        CHILDREN.discard(pid)
        partial = exits / f".{pid}"
        partial.write_text(str(os.waitstatus_to_exitcode(status)))
        partial.rename(exits / str(pid))


def run(request: dict[str, Any]) -> int | str | None:
    """In the child: become the requested command line, `python -m MODULE ARGS` or `python SCRIPT
    ARGS` (a console script), as CPython would run it; its exit code."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    streams = (request.get("stdin") or os.devnull, request["stdout"], request["stderr"])
    for fd, path in enumerate(streams):
        flags = os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_APPEND | os.O_CREAT
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  (line-buffered: logs are read live)
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    _, *line = request["argv"]  # [python, -m, MODULE, ARGS…] or [python, SCRIPT, ARGS…]
    try:
        if line[0] == "-m":
            sys.argv = [line[1], *line[2:]]
            sys.path[0] = os.getcwd()  # as for `python -m`
            runpy.run_module(line[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = line
            sys.path[0] = os.path.dirname(line[0])  # as for `python SCRIPT`
            runpy.run_path(line[0], run_name="__main__")
    except SystemExit as exit:
        return exit.code
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    for module in PRELOADED:
        importlib.import_module(module)
    # Some modules keep what they read from the environment when imported: the CLI's rich Consoles
    # size and colour themselves from COLUMNS, NO_COLOR and the like, and typer's rich_utils reads
    # TERMINAL_WIDTH and FORCE_COLOR. Those are dropped again, so each child imports them in its own
    # environment; what they import stays loaded.
    for name in [name for name in sys.modules if name.startswith(ENVIRONMENT_AT_IMPORT)]:
        del sys.modules[name]
    # Every server makes the same tool registrations (pure, cached per process: 0.1 s of CPU), and
    # every `serve --migrate` and `migrate` imports alembic and reads the migration scripts (0.16 s)
    importlib.import_module("vibe_ensemble.api.mcp.server").registered_tools()
    importlib.import_module("vibe_ensemble.store.migrate").head_revision()
    exits = Path(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the servers; this one ends with stdin
    signal.signal(signal.SIGCHLD, lambda *_: reap(exits))
    for line in sys.stdin:
        request = json.loads(line)
        # No SIGCHLD between the fork and noting the child: a child that ended at once is noted first
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            code = run(request)
            sys.stdout.flush()
            sys.stderr.flush()
            raise SystemExit(code)  # out of this loop: the interpreter ends as any program does
        CHILDREN.add(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        print(json.dumps({"pid": pid}), flush=True)
    for pid in list(CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
