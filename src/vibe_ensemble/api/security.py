"""HTTP hardening around the whole app: security headers, body limits, CORS from settings.

Authentication, authorisation, rate limits and the audit log live in the
services (`TokenService.authenticate`, `Caller.require`, `AuditService`); this
module only guards the transport. `docs/security.md` describes each header.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibe_ensemble.api import auth
from vibe_ensemble.api.hosts import MCP_PATH, HostGuard
from vibe_ensemble.ops.config import Settings

# The dashboard serves its own scripts and styles; nothing inline, nothing from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # never to other sites; our forms carry our Origin
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


_OVER_HTTP = (*_COMMON, (b"content-security-policy", CSP.encode()))
_OVER_HTTPS = (*_OVER_HTTP, (b"strict-transport-security", HSTS.encode()))
# The API's answers are one caller's data (a new token, the audit log, an inbox): no cache along the
# way, nor the browser's, keeps them, unless a route says otherwise (the API docs' assets).
_NO_STORE = (b"cache-control", b"no-store")
_API = ("/api/", "/mcp")


def security_headers(scheme: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every answer carries (docs/security.md), HSTS among them over HTTPS: the app's
    answers and those the server gives before the app sees a request (cli/http_protocol.py's 431)."""
    return _OVER_HTTPS if scheme == "https" else _OVER_HTTP


class SecurityHeadersMiddleware:
    """Adds CSP, nosniff, frame and referrer policies to every response; HSTS over HTTPS.

    HTTPS is the request's scheme: TLS at uvicorn, or `X-Forwarded-Proto: https`
    from a proxy listed in `trusted_proxies` (uvicorn rewrites the scheme then).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope.get("scheme"))
        if scope["path"].startswith(_API):
            extra = (*extra, _NO_STORE)

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in extra:
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, _send)


class _Aborted(Exception):
    """The request body broke a limit and the answer was already sent."""


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`; 408 when the body has not arrived whole `timeout_s`
    after the app first asked for it. The whole body, not each part of it: a client sending a
    byte now and then, each within any per-read timeout, held its request open without end.

    The answer is sent here, in the REST error shape (on /mcp as a JSON-RPC error, which an MCP
    client shows), before the app sees the end of the body; whatever the app tries to send
    afterwards is dropped.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes"
        jsonrpc = scope["path"] == MCP_PATH
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await auth.send_error(send, 413, "payload_too_large", too_large, close=True, jsonrpc=jsonrpc)
            return
        state: dict[str, Any] = {"received": 0, "done": False, "started": False, "answered": False}
        deadline: float | None = None

        async def _answer(status: int, code: str, text: str) -> NoReturn:
            state["answered"] = True
            if not state["started"]:
                await auth.send_error(send, status, code, text, close=True, jsonrpc=jsonrpc)
            raise _Aborted

        async def _receive() -> Message:
            nonlocal deadline
            if state["done"]:
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout_s
            try:
                # A deadline on this task, not `wait_for`'s task of its own for every message.
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await _answer(408, "request_timeout", f"request body not received within {self.timeout_s}s")
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    await _answer(413, "payload_too_large", too_large)
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        async def _send(message: Message) -> None:
            if state["answered"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except Exception:
            if not state["answered"]:
                raise


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers") or []:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def install(app: FastAPI, settings: Settings) -> None:
    """Wrap the app: headers outermost (every answer gets them), then the allowed-hosts check,
    then body limits, then CORS."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "Mcp-Session-Id",
                "Mcp-Protocol-Version",
            ],
            expose_headers=["Retry-After", "Mcp-Session-Id"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(HostGuard, settings=settings)
    app.add_middleware(SecurityHeadersMiddleware)
