"""Structured logging (structlog): console for people, JSON for machines."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibe_ensemble.auth import tokens
from vibe_ensemble.ops.config import Settings


class RedactTokens(logging.Filter):
    """Cuts every API token in a standard-library log record down to its display prefix."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = tokens.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactedLines:
    """A renderer's line with every token in it cut to its display prefix (`tokens.redact`).

    The line is redacted, not the event's values: one substring test per line (nearly every line
    holds no token), where walking the event's keys and values cost two calls for each, on every
    line. A token's characters are never escaped by either renderer, so it is found in the line
    wherever it was in the event: a value, a key, a traceback.
    """

    def __init__(self, render: Callable[[Any, str, structlog.types.EventDict], str | bytes]) -> None:
        self.render = render

    def __call__(self, logger: Any, name: str, event_dict: structlog.types.EventDict) -> str:
        line = self.render(logger, name, event_dict)
        return tokens.redact(line if isinstance(line, str) else line.decode())


class LogfmtRenderer:
    """structlog's `LogfmtRenderer(key_order=["timestamp", "level", "event"], drop_missing=True)`,
    the same line for the same event, in under half the time: a key is checked for spaces and
    control characters the first time it is seen, not a character at a time on every line (the
    access log writes a line for every request). tests/unit/test_log_format.py compares the two.
    """

    FIRST = ("timestamp", "level", "event")

    def __init__(self) -> None:
        self._keys: set[str] = set()  # keys already found valid (a handful: the code's own)

    def __call__(self, _: Any, __: str, event_dict: structlog.types.EventDict) -> str:
        pairs = []
        for key in self.FIRST:
            first = event_dict.pop(key, None)
            if first is not None:
                pairs.append((key, first))
        pairs.extend(event_dict.items())
        elements: list[str] = []
        # One loop, no call per pair: the access log writes a line for every request.
        for key, value in pairs:
            if key not in self._keys:
                if any(c <= " " for c in key):
                    raise ValueError(f'Invalid key: "{key}"')
                if len(self._keys) < 1000:
                    self._keys.add(key)
            if value is None:
                elements.append(key + "=")
                continue
            if value is True:
                elements.append(key)  # a flag
                continue
            if value is False:
                elements.append(key + "=false")
                continue
            text = str(value)
            quoted = " " in text or "=" in text or '"' in text
            if quoted and "\\" in text:
                text = text.replace("\\", "\\\\")
            if '"' in text:
                text = text.replace('"', '\\"')
            if "\n" in text:
                text = text.replace("\n", "\\n")
            elements.append(f'{key}="{text}"' if quoted else f"{key}={text}")
        return " ".join(elements)


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    renderer = RedactedLines(
        structlog.processors.JSONRenderer()
        if settings.log_json
        # logfmt (key=value) text: a person reads it, at two thirds of the cost of structlog's console columns
        else LogfmtRenderer()
    )
    # The libraries' own lines (uvicorn's, alembic's, the SDK's) in the same format as ours, with
    # their level and logger: a plain line in a JSON log is one a log pipeline cannot read.
    foreign = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.stdlib.add_logger_name,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
        if type(handler) is logging.StreamHandler:  # basicConfig's (not a test runner's capture)
            handler.setFormatter(foreign)
    # uvicorn's own logging config (applied by any uvicorn.Config in this process without
    # log_config=None) gives its loggers handlers of their own that stop at "uvicorn": their lines
    # would bypass the format and the redaction above. They go through the root's handlers instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # Libraries' routine chatter (alembic's context, the MCP session manager) is not news at INFO.
    for name in ("alembic", "mcp"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_line_logger,
    )


class LineLogger:
    """Writes each rendered line to the current `sys.stdout` whole: the line and its newline in one
    write, then a flush. `serve --workers N` runs N processes on one stdout, unbuffered in the image
    (PYTHONUNBUFFERED=1): structlog's `PrintLogger` wrote a line and then its newline, so two
    workers' lines ran together and a log pipeline met two JSON objects on one line. (One write of
    up to PIPE_BUF bytes, 4 KiB, to a pipe is never interleaved with another's.)"""

    _lock = threading.Lock()  # the loop's lines and the health thread's

    def msg(self, message: str) -> None:
        with self._lock:
            out = sys.stdout
            out.write(message + "\n")
            out.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


_LINES = LineLogger()


def _line_logger(*_args: Any) -> LineLogger:
    return _LINES


def unredacted_line(event: str, *, level: str, **fields: object) -> str:
    """The JSON log line of `event` as the JSON renderer writes it (the fields, `event`, `level`,
    `timestamp`), *not* passed through the redactor: for the one secret a log is meant to carry,
    the first-start admin token (cli/server.announce). Nothing else writes past the redactor."""
    line = {**fields, "event": event, "level": level}
    return json.dumps(_STAMP(None, level, line))


_STAMP = structlog.processors.TimeStamper(fmt="iso")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
LOG_FIELDS = "vibe.log"  # the scope key of what the request's line says about the caller (see `note`)
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})  # answered often and alike: their lines are debug

log = structlog.get_logger("vibe_ensemble.access")


def note(scope: Scope, **fields: object) -> None:
    """Add fields (the caller's agent, project, role) to the request's log line."""
    target = scope.get(LOG_FIELDS)
    if isinstance(target, dict):
        target.update({k: v for k, v in fields.items() if v is not None})


def new_request_id() -> str:
    """A request id unique on this server: 16 hex digits, the process's random half and a count.
    Ids name requests in logs; they are not secrets, so none costs a read of the system's random
    source (secrets.token_hex took ~1% of a tool call's CPU)."""
    return f"{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFF:08x}"


def _new_id_prefix() -> None:
    global _ID_PREFIX, _ID_COUNT
    _ID_PREFIX, _ID_COUNT = secrets.token_hex(4), itertools.count()


_ID_PREFIX, _ID_COUNT = "", itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker counts on its own prefix


class RequestLogMiddleware:
    """Every HTTP request gets an id and, when answered, one log line.

    The id is the client's `X-Request-ID` when it is sane, else a new one; it is returned in the
    `X-Request-ID` header and bound to every log line written while the request is served
    (`request_id=…`), so a client's report can be matched to the server's log. The request's line
    (`http_request`) has the method, the route template (never the raw path), the status, the
    latency and who asked (`note`): never a query string, a header, a body or a token.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The logger as configured now (configure_logging runs before the app is made): the lazy
        # module-level one builds a new logger, and its output, at every line.
        self._log = log.bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER, b"")
        request_id = given.decode() if _SANE_ID.fullmatch(given) else new_request_id()
        started = time.perf_counter()
        status = 500 if scope["type"] == "http" else 101
        fields: dict[str, object] = {}
        scope[LOG_FIELDS] = fields

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode())]}
            await send(message)

        # Bound and reset by token, not by `bound_contextvars`: its generator stays alive as long as
        # the request, hours for each of thousands of open feed sockets.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, _send)
        finally:
            try:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                project = safe_name((scope.get("path_params") or {}).get("project"))
                line = {"project": project, **fields} if project else fields
                emit = self._log.debug if route in PROBES and status < 400 else self._log.info
                emit(
                    "http_request",
                    method=scope.get("method", "WS"),
                    route=route,
                    status=status,
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                    **line,
                )
            finally:
                structlog.contextvars.reset_contextvars(**bound)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def safe_name(value: object) -> str | None:
    """`value` when it is a well-formed project or agent name, else None: what a client sent is
    logged only when it cannot carry anything but a name (no spaces, newlines or markup)."""
    return value if isinstance(value, str) and _NAME.fullmatch(value) else None
