"""Starts `python -m vibe_ensemble.cli serve …` processes with the server's modules already imported.

    python tests/zygote.py EXITS_DIR        (run by tests/support.py, one per test process)

A server process spends about a second of CPU importing the MCP SDK, FastAPI, SQLAlchemy and our own
modules before it does anything, and the suite starts about a hundred of them. This process imports
them once, then reads requests, one JSON line each on stdin (`{"argv", "env", "cwd", "log"}`), and
for each forks a child that runs the command line exactly as `python -m vibe_ensemble.cli ARGS`
would from there: its own process, environment, working directory and log file, the CLI's own entry
point, and a normal interpreter exit (atexit handlers run). It answers each request with the child's
pid (`{"pid": N}`); when a child ends, its exit status, as `subprocess.Popen.returncode` gives it,
is written to EXITS_DIR/PID. When stdin closes (the test process ended), children still running are
killed.

Only what is the same in every server is imported here: nothing reads the environment or configures
anything at import. Commands that depend on what was imported when (`--workers`, which must choose
the metrics directory before prometheus_client is imported; interpreter options such as
`-X importtime`) are never sent here: tests/support.py starts those as fresh interpreters.
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

# What a serve imports (the dashboard's pages and, for --migrate or PostgreSQL, alembic and asyncpg too)
PRELOADED = (
    "vibe_ensemble.cli",
    "vibe_ensemble.cli.serve",
    "vibe_ensemble.cli.server",
    "vibe_ensemble.api.app",
    "vibe_ensemble.api.web.render",
    "vibe_ensemble.store.migrate",
    "vibe_ensemble.store.postgres",
)

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


def run(request: dict[str, object]) -> int | str | None:
    """In the child: become `python -m vibe_ensemble.cli ARGS` as requested; its exit code."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])  # type: ignore[arg-type]
    os.chdir(str(request["cwd"]))
    log = os.open(str(request["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    nothing = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((0, nothing), (1, log), (2, log)):
        os.dup2(target, fd)
    os.close(log)
    os.close(nothing)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  (line-buffered: a log)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    argv = list(request["argv"])  # type: ignore[call-overload]
    sys.argv = ["vibe-ensemble", *argv[3:]]  # after [python, -m, vibe_ensemble.cli]
    try:
        runpy.run_module("vibe_ensemble.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        return exit.code
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    for module in PRELOADED:
        importlib.import_module(module)
    exits = Path(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the servers; this one ends with stdin
    signal.signal(signal.SIGCHLD, lambda *_: reap(exits))
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = run(request)
            sys.stdout.flush()
            sys.stderr.flush()
            raise SystemExit(code)  # out of this loop: the interpreter ends as any program does
        CHILDREN.add(pid)
        print(json.dumps({"pid": pid}), flush=True)
    for pid in list(CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
