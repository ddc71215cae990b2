"""`/mcp`: authenticate the bearer token, bind the call context, hand the request to the profile's app."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from vibe_ensemble.api import auth
from vibe_ensemble.api.mcp.context import CallContext, bind
from vibe_ensemble.api.mcp.profiles import Profile
from vibe_ensemble.domain.errors import DatabaseUnavailable, RateLimited, StorageFull, Unauthenticated
from vibe_ensemble.services import Services

NO_STREAM = (
    "GET /mcp opens no stream on this server: send each request as a POST, its answer comes back on "
    "it (resource changes: POST subscriptions/listen)"
)


class MCPEndpoint:
    """An unauthenticated request never reaches the SDK; an authenticated one runs inside its `CallContext`.

    A request over the caller's rate limit still reaches the SDK, so that a tool call answers with a
    tool error the agent can read; the HTTP answer carries `Retry-After` (see `CallContext`).
    """

    def __init__(self, services: Services, apps: Mapping[Profile, ASGIApp], default_profile: str) -> None:
        self.services = services
        self.apps: dict[str, ASGIApp] = {str(name): app for name, app in apps.items()}
        self.default_profile = default_profile

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            found = await auth.authenticate(self.services, HTTPConnection(scope), throttle=False)
        except (Unauthenticated, RateLimited, DatabaseUnavailable, StorageFull) as exc:
            # A token not verified recently cannot be checked while the database is down (see
            # TokenService.authenticate): the client hears 503 and when to come back.
            await auth.send_vibe_error(send, exc)
            return
        if scope["method"] == "GET":
            # Over stateless HTTP no message reaches a client but on the POST it is the answer to (and
            # the stream `subscriptions/listen` opens): a GET stream would stay open with nothing
            # ever on it. The protocol lets a server that offers no such stream answer 405.
            await auth.send_error(send, 405, "method_not_allowed", NO_STREAM, headers={"Allow": "POST"})
            return
        call = CallContext.admit(self.services, found.caller, receive)
        if call.limited is not None:
            send = _with_header(send, b"retry-after", auth.retry_after(call.limited).encode())
        profile = found.caller.tool_profile or self.default_profile
        app = self.apps.get(profile, self.apps[self.default_profile])
        with bind(call):
            await app(scope, receive, send)


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def _send(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return _send
