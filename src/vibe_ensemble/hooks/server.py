"""What an agent's hook asks the server, over REST with the agent's own token.

A hook runs as a short process for each event, so each call is one short HTTP request with a short
timeout; when the server cannot answer, the caller hears `Unreachable` and lets the agent work on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2

from vibe_ensemble.domain.globs import escape
from vibe_ensemble.ops.urls import base_url

TIMEOUT_S = 5.0


class Unreachable(Exception):
    """The server did not answer as asked; the message says why (never with the token)."""


class NotFound(Exception):
    """The server answered 404: the agent (or project) is not there."""


@dataclass(frozen=True)
class Identity:
    url: str  # the server's base URL, e.g. http://127.0.0.1:8080
    token: str
    project: str
    agent: str
    role: str = "worker"  # what the agent registers as when the server does not know it yet
    program: str = "claude-code"  # the client the agent registers with (its `program`)


class Server:
    """The agent's view of the server: presence, mail and leases."""

    def __init__(self, who: Identity, *, timeout: float = TIMEOUT_S) -> None:
        self.who = who
        self._agent = f"/api/v1/projects/{quote(who.project, safe='')}/agents/{quote(who.agent, safe='')}"
        self._project = f"/api/v1/projects/{quote(who.project, safe='')}"
        self._client = httpx2.Client(
            base_url=base_url(who.url),
            timeout=timeout,
            headers={"Authorization": f"Bearer {who.token}"},
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._client.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            raise Unreachable(f"cannot reach {base_url(self.who.url)}: {exc}") from None
        if r.status_code == 404:
            raise NotFound(_message(r))
        if r.status_code >= 300:
            raise Unreachable(f"the server answered {r.status_code}: {_message(r)}")
        return r.json()

    def heartbeat(self, status: str | None = None, activity: str | None = None) -> dict[str, Any]:
        """Mark the agent alive (registering it first if the server does not know it yet)."""
        body = {"status": status, "activity": activity}
        try:
            result: dict[str, Any] = self._call("POST", f"{self._agent}/heartbeat", json=body)
        except NotFound:
            self.register(self.who.role)
            result = self._call("POST", f"{self._agent}/heartbeat", json=body)
        return result

    def register(self, role: str = "worker") -> None:
        body = {"name": self.who.agent, "role": role, "program": self.who.program}
        try:
            self._call("POST", f"{self._project}/agents", json=body)
        except NotFound as exc:
            raise Unreachable(f"the server has no project {self.who.project!r}: {exc}") from None

    def unread(self, limit: int = 5) -> dict[str, Any]:
        """The newest unread mail, left unread (reading it is the agent's own act)."""
        params = {"unread_only": "true", "limit": str(limit)}
        inbox: dict[str, Any] = self._call("GET", f"{self._agent}/inbox", params=params)
        return inbox

    def conflicts(self, path: str) -> list[dict[str, Any]]:
        """Other agents' exclusive leases on this repository path (the agent's own never count)."""
        # the edited path is a file: README.md is not under a lease of **/*.py
        body = {"paths": [escape(path)], "exclusive": False, "agent": self.who.agent, "files": True}
        try:
            check: dict[str, Any] = self._call("POST", f"{self._project}/reservations/check", json=body)
        except NotFound as exc:
            raise Unreachable(str(exc)) from None
        return list(check["conflicts"])


def _message(response: httpx2.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:200]
