"""uvicorn's httptools protocol with a bound on a request's head, the parser `serve` runs.

httptools (llhttp, in C) parses a request in a fraction of what h11, uvicorn's pure-Python parser,
costs: about a tenth of a tool call's CPU (bench/RESULTS.md). h11 refuses a request line and
headers longer than 16 KB; llhttp keeps whatever it is sent, so without a bound a client could send
headers without end and the server would hold them all. `HeadLimitedProtocol` counts the bytes
that arrive while a request's head is incomplete and answers 431 past `MAX_HEAD`, closing the
connection: what a request may carry is bounded again, for every request of a keep-alive
connection. Nor does uvicorn bound how long a head may take to arrive (its keep-alive timer stops
at a request's first byte): a client sending a byte now and then, or connecting and sending nothing,
held its connection (a socket, a file descriptor) for as long as it liked. A head must now arrive
whole within the protocol's `head_timeout_s` (`VIBE_HEAD_TIMEOUT_S`), counted from the connection's
start and then from each later request's first byte; past it the connection gets 408 and is
closed. A request whose target is a whole URL (absolute-form) is taken to be for that URL's
host, whatever its `Host` header says, as HTTP requires: the allowed-hosts check sees that host.
"""

from __future__ import annotations

from asyncio import TimerHandle
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vibe_ensemble.api.security import security_headers

MAX_HEAD = 16 * 1024  # bytes of a request line and its headers (h11's default bound)
_TOO_LARGE = b"request line and headers must be at most 16384 bytes"


def head_limited_protocol(head_timeout_s: float) -> type[HeadLimitedProtocol]:
    """`HeadLimitedProtocol` with this deadline for a request's head, for uvicorn's `http=`."""
    return type("HeadLimitedProtocol", (HeadLimitedProtocol,), {"head_timeout_s": head_timeout_s})


class HeadLimitedProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol`, refusing a request whose head (request line and headers) exceeds
    `MAX_HEAD` bytes with 431 Request Header Fields Too Large, and one whose head is not whole
    `head_timeout_s` after it began with 408 Request Timeout."""

    head_timeout_s = 30.0  # VIBE_HEAD_TIMEOUT_S's default; `serve` sets the setting's value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # a request's head is being read (the first one's, to begin with)
        self._head_bytes = 0
        self._refused = False
        self._head_deadline: TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # the first head's time runs from the connection's start: one that sends nothing is cut too
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        began = None
        if self._in_head:
            if self._head_bytes == 0 and self._head_deadline is None:
                began = self.loop.time()  # a later request's first bytes (keep-alive, pipelined)
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # Counted before parsing, judged after: a chunk that ends the head and carries body bytes
        # is not a long head. So a head is held to MAX_HEAD plus one read (at most 256 KB).
        if self._head_bytes > MAX_HEAD:
            self._refuse(431, b"Request Header Fields Too Large", _TOO_LARGE)
        elif began is not None:
            # Still incomplete after this read: its deadline runs from its first bytes. A head that
            # came whole in one read, as nearly every one does, needed no timer made and cancelled.
            self._head_deadline = self.loop.call_at(began + self.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_deadline()
        if self.url[:1] not in (b"/", b"*"):
            self._host_from_target()
        super().on_headers_complete()

    def _host_from_target(self) -> None:
        """An absolute-form request target (`GET http://other.host/path HTTP/1.1`) names the host the
        request is for, and the server must go by it, not by `Host` (RFC 9112 §3.2.2); uvicorn kept
        only its path, so the allowed-hosts check (api/hosts.py) read a `Host` that did not count.
        The target's authority now is the request's one `Host`."""
        target = httptools.parse_url(self.url)  # a malformed one: 400, as any unparsable request
        if not target.host:
            raise ValueError("an absolute-form request target without a host")
        host = b"[" + target.host + b"]" if b":" in target.host else target.host
        if target.port is not None:
            host += b":" + str(target.port).encode("ascii")
        self.headers[:] = [(name, value) for name, value in self.headers if name != b"host"]
        self.headers.append((b"host", host))
        # and the target in origin-form, as every route, the WebSocket upgrade and the log expect
        # (uvicorn replays the request line to its WebSocket protocol: the whole URL was the path)
        self.url = (target.path or b"/") + (b"?" + target.query if target.query else b"")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next request's head (keep-alive) is counted and timed afresh
        self._head_bytes = 0

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0 or (self.cycle is not None and not self.cycle.response_complete):
            # nothing was asked (a connection opened and left idle), or an answer is still being
            # written on this connection, where a 408 would land inside it: just close
            self.transport.close()
            return
        message = f"request line and headers must arrive within {self.head_timeout_s:g} s"
        self._refuse(408, b"Request Timeout", message.encode("ascii"))

    def _refuse(self, status: int, reason: bytes, message: bytes) -> None:
        self._refused = True
        self._stop_head_deadline()
        self.logger.warning("Request head refused with %d: %s", status, message.decode("ascii"))
        response = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        # the app never sees this request: its security headers are added here, as it would
        for name, value in (*self.server_state.default_headers, *security_headers(self.scheme)):
            response.extend([name, b": ", value, b"\r\n"])
        response.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(message)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                message,
            ]
        )
        self.transport.write(b"".join(response))
        self.transport.close()
