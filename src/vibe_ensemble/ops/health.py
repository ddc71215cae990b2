"""Liveness on a port of its own (`VIBE_HEALTH_PORT`), answered by a thread beside the event loop.

`/healthz` on the main port waits its turn on the event loop: under load (fifty agents calling at
once) a probe took tens of milliseconds, and a liveness probe that times out restarts a server that
was only busy. Here a small HTTP server on its own thread answers `GET /healthz` (and HEAD) at once,
whatever the loop is doing, and still tells a wedged process from a busy one: the loop touches a
heartbeat every `BEAT_S`; while the heartbeat is younger than `health_stall_s` the answer is 200,
after that 503 (the loop has not run for that long: restart me).

It answers nothing else (404), sends no body a client chose, keeps no connection open (a client
whose whole request head has not arrived within `REQUEST_TIMEOUT_S` is dropped, however it trickles
it in; a probe is answered at once on the
listening thread, any slower connection on a thread of its own, `HEALTH_THREADS` at most, so an idle
one never holds up a probe), and is meant for the kubelet or a local
supervisor, not for the network: bind it where only they reach it. With `serve --workers N` every
worker answers on the same port (SO_REUSEPORT): a probe hears from one of them. A lone server
refuses to start on a port that is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import select
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from vibe_ensemble.ops.startup import StartupError

if TYPE_CHECKING:
    from vibe_ensemble.ops.config import Settings

BEAT_S = 0.25
REQUEST_TIMEOUT_S = 2.0
HEALTH_THREADS = 16  # connections waited on at once; one past them is closed at once
INLINE_WAIT_S = 0.01  # how long the listening thread looks for a request head before handing it on (a
# probe sends it with the connection; a crowd of idle connections costs the probe this much each)
MAX_HEAD = 8192  # a probe's head is far smaller; a larger one is read by a thread
# How long the event loop's thread keeps the GIL while this thread waits for it (Python's default
# 5 ms): a probe's answer takes the GIL several times (accept, read, write, close), and where the
# loop's thread seldom lets it go by itself (on PostgreSQL it runs Python all the time under load;
# sqlite3 lets it go for each statement) each wait was the whole interval: p99 14-26 ms under the
# 10-agent swarm on PostgreSQL, 6-11 ms (the machine's floor) with this (bench/RESULTS.md).
SWITCH_INTERVAL_S = 0.0005


class Heartbeat:
    """When the event loop last ran (`time.monotonic()`), touched by a task on the loop."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    async def run(self) -> None:
        while True:
            self.at = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def age(self) -> float:
        return time.monotonic() - self.at


class _Server(ThreadingHTTPServer):
    """A probe is answered on the listening thread itself when its whole request head is there within
    `INLINE_WAIT_S` of the connection (a kubelet's, a supervisor's: sent with the connection), with no
    thread started, so under load it waits for the GIL once. Any other connection (one that sends
    nothing, or half a head) gets a thread of its own, at most HEALTH_THREADS at once, where its head
    must arrive whole within REQUEST_TIMEOUT_S of the thread's start (a client sending a byte a
    second held its thread for as long as it kept sending): it never holds a probe behind it; one
    past the bound is closed at once."""

    request_queue_size = 64
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(HEALTH_THREADS)
        self.heads: dict[socket.socket, bytes] = {}  # connection -> its head, read by its thread
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if _whole_head(request):
            socketserver.BaseServer.process_request(self, request, client_address)  # here, at once
            return
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # a thread of its own
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer (a broken pipe, a reset) is nothing to report; anything
        else is printed as the standard library does."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            head = _read_head(request, time.monotonic() + REQUEST_TIMEOUT_S)
            if head is None:
                self.shutdown_request(request)
                return
            self.heads[request] = head  # the handler reads it from here (`Handler.setup`)
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.heads.pop(request, None)
        finally:
            self._slots.release()


def _whole_head(conn: socket.socket) -> bool:
    """Whether the connection's request head (through its blank line) has arrived within
    INLINE_WAIT_S, looked at without reading it: answering it then never waits on the client (a
    GET or HEAD has no body)."""
    try:
        ready, _, _ = select.select([conn], [], [], INLINE_WAIT_S)
        return bool(ready) and b"\r\n\r\n" in conn.recv(MAX_HEAD, socket.MSG_PEEK)
    except OSError:
        return False


def _read_head(conn: socket.socket, deadline: float) -> bytes | None:
    """The connection's request head, read through its blank line by `deadline`; None when it has not
    arrived whole by then, the client closed, or it is longer than MAX_HEAD."""
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            left = deadline - time.monotonic()
            if left <= 0 or len(head) >= MAX_HEAD:
                return None
            ready, _, _ = select.select([conn], [], [], left)
            chunk = conn.recv(MAX_HEAD - len(head)) if ready else b""
            if not chunk:
                return None
            head += chunk
    except OSError:
        return None
    return head


class _SharedServer(_Server):
    allow_reuse_port = True  # the workers of `serve --workers N` share the port; a lone server owns it


def _handler(heartbeat: Heartbeat, stall_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S
        server_version = "vibe-ensemble"
        server: _Server

        def setup(self) -> None:
            super().setup()
            head = self.server.heads.get(self.request)
            if head is not None:  # read by the connection's thread, within its deadline
                self.rfile = io.BytesIO(head)

        def version_string(self) -> str:
            return self.server_version

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            doc: dict[str, object]
            if self.path.split("?", 1)[0] != "/healthz":
                status, doc = 404, {"error": {"code": "not_found", "message": "only /healthz is here"}}
            else:
                age = heartbeat.age()
                alive = age < stall_s
                status = 200 if alive else 503
                doc = {"status": "ok" if alive else "stalled", "loop_seen_ms_ago": round(age * 1000, 1)}
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(data)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # the base's name
            """Probes are not logged (a 200 from /healthz on the main port is a debug line too)."""

    return Handler


class HealthListener:
    """The liveness port: bound when made (a taken port fails the start), served from `start`."""

    def __init__(self, host: str, port: int, *, stall_s: float, shared: bool = False) -> None:
        self.heartbeat = Heartbeat()
        server = _SharedServer if shared else _Server
        self._server = server((host, port), _handler(self.heartbeat, stall_s))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="health", daemon=True
        )
        self._beat: asyncio.Task[None] | None = None
        self._switch_interval: float | None = None  # the process's, while this one is in force

    def start(self) -> None:
        self._beat = asyncio.get_running_loop().create_task(self.heartbeat.run())
        # Process-wide, but it only matters while a thread waits for the GIL: this one, answering.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._thread.start()

    def close(self) -> None:
        """Give the port back (never started: `serve --workers N` checks it is free, then each
        worker binds its own)."""
        self._server.server_close()

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self._thread.is_alive():
            await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)


def health_listener(settings: Settings, *, shared: bool = False) -> HealthListener | None:
    """The liveness port `settings` asks for (None without `health_port`), bound now; `shared` by
    the workers of one `serve --workers N` (a lone server refuses a port someone else holds)."""
    if settings.health_port is None:
        return None
    try:
        return HealthListener(
            settings.host, settings.health_port, stall_s=settings.health_stall_s, shared=shared
        )
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.health_port} for VIBE_HEALTH_PORT: {exc.strerror}; "
            "pick another port"
        ) from None
