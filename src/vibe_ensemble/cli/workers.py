"""`serve --workers N`: N server processes on one port, for one replica to use its cores (PostgreSQL).

The parent binds the port, then forks the workers, each a whole server (runtime, event bridge,
MCP and REST) accepting on the shared socket; the kernel spreads connections over them. Before
forking, the parent applies migrations and creates the first-start token (so no two workers
race for either), with no event loop or thread left running. The parent passes SIGTERM and
SIGINT on (each worker leads a process group of its own, so a terminal's Ctrl-C reaches it once,
through the parent), waits for every worker, and exits with the first failure's status; if one worker
dies, the others are stopped too, so the supervisor (Kubernetes, systemd) restarts the whole
replica rather than running it short-handed; if the parent itself is killed outright, the kernel
tells each worker to stop (Linux's parent-death signal), so none serves on orphaned.

Workers are replicas that share a port: everything that holds across replicas holds here
(events cross by LISTEN/NOTIFY, the background duties run in one of them). SQLite has one
owner process, so several workers are refused there.

/metrics adds up every worker's values (prometheus_client's multiprocess mode): `share_metrics`
points `PROMETHEUS_MULTIPROC_DIR` at the operator's directory, emptied of an earlier run's files,
or at a new private one removed at exit, before prometheus_client is imported; each worker then
writes its values to files there, and a scrape of any worker reads them all.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType

import structlog

from vibe_ensemble.cli.common import run
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.startup import stop_asked

Serve = Callable[..., Awaitable[None]]

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's files: counter_<pid>.db, gauge_livesum_<pid>.db, histogram_<pid>.db, …
METRICS_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


def share_metrics() -> Path:
    """Multiprocess metrics: `PROMETHEUS_MULTIPROC_DIR` (created, and emptied of metrics files) or a
    new private directory. Must run before prometheus_client is imported; checked here."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was chosen")
    given = os.environ.get(METRICS_DIR)
    if given:
        directory = Path(given)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for pattern in METRICS_FILES:  # another run's values would be added to ours
            for stale in directory.glob(pattern):
                stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="vibe-metrics-"))
        os.environ[METRICS_DIR] = str(directory)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def serve_workers(
    settings: Settings,
    sock: socket.socket,
    *,
    workers: int,
    prepare: Callable[[], Awaitable[None]],
    serve: Serve,
) -> None:
    """Serve on `sock` (bound by the caller, before anything was created) from `workers` processes."""
    run(prepare, database=settings.effective_database_url)
    asked = stop_asked()
    if asked is not None:  # while migrating: no worker is started
        structlog.get_logger(__name__).info(
            "server_stopped", before="serving", signal=signal.Signals(asked).name
        )
        return
    from vibe_ensemble.ops import metrics

    # The supervisor serves nothing, yet importing the metrics module gave it live gauges of its own
    # (`vibe_events_listening` at 0, taken with the workers' by `livemin`): the gauge read 0 at every
    # scrape. Its live gauge files go before the workers are forked (each worker writes files under
    # its own pid), so only workers count in the live gauges.
    metrics.process_exited(os.getpid())
    pids: list[int] = []
    supervisor = os.getpid()
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve until told to stop, and never return into the parent's code
            code = 0
            try:
                # A process group of its own: a terminal's Ctrl-C (or any signal to the supervisor's
                # group) reaches the supervisor alone, which passes it on once. Signalled by both,
                # a worker took the second for "stop at once" and cut off its requests.
                os.setpgid(0, 0)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _stop_with(supervisor)
                # Every line this worker logs says which one it is (their outages, their recoveries)
                structlog.contextvars.bind_contextvars(worker=index)
                run(
                    functools.partial(serve, settings, migrate=False, sockets=[sock], first=index == 0),
                    serving=True,
                    database=settings.effective_database_url,
                )
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


PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends this process when its parent dies


def _stop_with(supervisor: int) -> None:
    """Linux: this worker is sent SIGTERM (and stops as it would on any) when the supervisor dies.
    A supervisor killed outright (SIGKILL, an OOM kill) forwards nothing: its workers served on,
    orphaned, holding the port, and a restart found it taken. Elsewhere nothing is set."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before that was set
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(pids: list[int]) -> int:
    """Forward stop signals to the workers; wait for all; the first non-zero status wins."""
    import structlog

    from vibe_ensemble.ops import metrics
    from vibe_ensemble.ops.startup import collect_from_here

    collect_from_here()  # the workers are started: the collector, off while starting (cli.main), runs

    told: set[int] = set()  # the stop signals passed on to the workers

    def forward(sig: int, _frame: FrameType | None) -> None:
        told.add(sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    asked = stop_asked()  # while the workers were being started
    if asked is not None:
        forward(asked, None)
    status = 0
    alive = set(pids)
    while alive:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        metrics.process_exited(pid)
        code = os.waitstatus_to_exitcode(raw)
        if code < 0 and -code in told:
            # Told to stop while it was still starting (before its handlers were set, the signal's
            # default ends it): it did as it was told, it did not die.
            continue
        if code != 0 and status == 0:
            status = code if code > 0 else 1
            died = {"signal": -code} if code < 0 else {"status": code}
            structlog.get_logger(__name__).error("worker_died", pid=pid, stopping="the other workers", **died)
            forward(signal.SIGTERM, None)  # one died: stop the replica as a whole
    return status
