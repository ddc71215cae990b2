"""What a stdio MCP server (`vibe-ensemble mcp`, the bridge or on the database) still owes its client
when stdin closes: the answers to the requests it read before.

A client that writes its last requests and closes its end (a pipe does, `printf … | vibe-ensemble
mcp`) gets every answer: the server goes on until they are written, at most `DRAIN_S` more, before
it stops. A `subscriptions/listen` stream lasts until the client leaves (no answer is due), and a
request the client cancelled is not waited for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import mcp_types as types

# Once stdin has closed, how long a stdio server still waits for the answers to what was asked
# before (a `wait_for_messages` waits at most 60 s).
DRAIN_S = 70.0


@dataclass
class Pending:
    """The ids of the requests forwarded and not answered yet, and a way to wait until none is left."""

    ids: set[types.RequestId] = field(default_factory=set)
    settled: anyio.Event = field(default_factory=anyio.Event)

    def asked(self, message: types.JSONRPCMessage) -> None:
        # `subscriptions/listen` is a stream that lasts until the client leaves: no answer to wait for
        if isinstance(message, types.JSONRPCRequest) and message.method != "subscriptions/listen":
            self.ids.add(message.id)
        elif isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            params = message.params or {}
            self.answered_id(params.get("requestId"))  # the client gave up on it: no answer is due

    def answered_id(self, request_id: object) -> None:
        if isinstance(request_id, str | int):
            self.ids.discard(request_id)
        if not self.ids:
            self.settled.set()

    def answered(self, message: types.JSONRPCMessage) -> None:
        if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            self.answered_id(message.id)

    async def wait(self) -> None:
        while self.ids:
            self.settled = anyio.Event()
            await self.settled.wait()
