"""`serve --workers N`: N server processes on one port, for one replica to use its cores (PostgreSQL).

The parent binds the port, then forks the workers, each a whole server (runtime, event bridge,
MCP and REST) accepting on the shared socket; the kernel spreads connections over them. Before
forking, the parent applies migrations and creates the first-start token (so no two workers
race for either), with no event loop or thread left running. The parent passes SIGTERM and
SIGINT on, waits for every worker, and exits with the first failure's status; if one worker
dies, the others are stopped too, so the supervisor (Kubernetes, systemd) restarts the whole
replica rather than running it short-handed.

Workers are replicas that share a port: everything that holds across replicas holds here
(events cross by LISTEN/NOTIFY, the background duties run in one of them). SQLite has one
owner process, so several workers are refused there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from types import FrameType

from vibe_ensemble.cli.common import run
from vibe_ensemble.ops.config import Settings

Serve = Callable[..., Awaitable[None]]


def serve_workers(
    settings: Settings,
    sock: socket.socket,
    *,
    workers: int,
    prepare: Callable[[], Awaitable[None]],
    serve: Serve,
) -> None:
    """Serve on `sock` (bound by the caller, before anything was created) from `workers` processes."""
    run(prepare)
    pids: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve until told to stop, and never return into the parent's code
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run(functools.partial(serve, settings, migrate=False, sockets=[sock], first=index == 0))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # the worker's own logging already said why
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    sock.close()
    raise SystemExit(_supervise(pids))


def _supervise(pids: list[int]) -> int:
    """Forward stop signals to the workers; wait for all; the first non-zero status wins."""

    def forward(sig: int, _frame: FrameType | None) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    alive = set(pids)
    while alive:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        code = os.waitstatus_to_exitcode(raw)
        if code != 0 and status == 0:
            status = code if code > 0 else 1
            forward(signal.SIGTERM, None)  # one died: stop the replica as a whole
    return status
