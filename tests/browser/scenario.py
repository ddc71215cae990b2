"""A small, realistic project state built over the REST API: what the board test and the docs
screenshot show."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    from playwright.sync_api import Page


class Api:
    """A thin REST client for one project with one token."""

    def __init__(self, url: str, token: str, project: str = "default") -> None:
        self.http = httpx2.Client(
            base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self.p = f"/projects/{project}"

    def call(self, method: str, path: str, json: Any = None, status: int | None = None) -> Any:
        r = self.http.request(method, path, json=json)
        assert r.status_code < 300 if status is None else r.status_code == status, r.text
        return r.json() if r.content else None

    def agent(self, name: str, role: str = "worker", status: str = "idle", activity: str = "") -> None:
        self.call("POST", self.p + "/agents", {"name": name, "role": role, "program": "claude-code"})
        self.call("POST", f"{self.p}/agents/{name}/heartbeat", {"status": status, "activity": activity})

    def issue(self, title: str, **fields: Any) -> int:
        issue_id: int = self.call("POST", self.p + "/issues", {"title": title, **fields})["id"]
        return issue_id

    def claim(self, issue_id: int, agent: str) -> None:
        self.call("POST", f"{self.p}/issues/{issue_id}/claim", {"agent": agent})

    def token(self, role: str, label: str, **fields: Any) -> tuple[int, str]:
        made = self.call("POST", "/tokens", {"role": role, "label": label, **fields})
        return made["id"], made["token"]


def sign_out(page: Page) -> None:
    """Leave the page, then drop its session. A dashboard page left open while its cookie goes would
    have its next update refused (401) and send itself to /login, racing the test's own
    navigation there (which then fails with net::ERR_ABORTED)."""
    page.goto("about:blank")
    page.context.clear_cookies()


def populate(api: Api) -> None:
    """Three agents at work on an auth refactor: issues in every column, leases, mail."""
    api.agent("ada", "coordinator", "working", "Splitting the auth epic into tasks")
    api.agent("brook", "worker", "working", "Moving sessions into middleware")
    api.agent("cyd", "worker", "idle", "Waiting for review of #3")
    parser = api.issue("Extract the token parser", priority="p1", labels=["auth"])
    api.claim(parser, "cyd")
    api.call("POST", f"{api.p}/issues/{parser}/close", {"resolution": "Merged in #41", "agent": "cyd"})
    middleware = api.issue("Session middleware", priority="p0", labels=["auth", "api"])
    api.claim(middleware, "brook")
    api.call(
        "POST",
        f"{api.p}/issues/{middleware}/comments",
        {"body": "Cookie handling is done; CSRF next.", "agent": "brook"},
    )
    form = api.issue("Login form validation", priority="p2", labels=["ui"])
    api.claim(form, "cyd")
    api.call("PATCH", f"{api.p}/issues/{form}", {"status": "review", "agent": "cyd"})
    api.issue("Rate-limit failed logins", priority="p1", depends_on=[middleware], labels=["auth"])
    api.issue("Document the /auth endpoints", priority="p3", labels=["docs"])
    api.issue("Audit log for admin actions", priority="p2", labels=["security"])
    api.call(
        "POST",
        api.p + "/reservations",
        {
            "paths": ["src/auth/**"],
            "reason": "session middleware",
            "issue": middleware,
            "agent": "brook",
            "ttl_s": 3600,
        },
    )
    api.call(
        "POST",
        api.p + "/reservations",
        {"paths": ["docs/**"], "exclusive": False, "reason": "auth docs", "agent": "cyd", "ttl_s": 1800},
    )
    api.call(
        "POST", f"{api.p}/agents/cyd/heartbeat", {"status": "idle", "activity": "Waiting for review of #3"}
    )
    api.call(
        "POST",
        api.p + "/messages",
        {"subject": "Rebase on main before review", "body": "#1 is merged.", "to": ["brook"], "agent": "ada"},
    )


class Heartbeats:
    """Keeps some agents alive (a heartbeat every half second) while the others fall silent."""

    def __init__(self, api: Api, names: list[str], status: str = "working") -> None:
        self.api, self.names, self.status = api, names, status
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for name in self.names:
                self.api.call("POST", f"{self.api.p}/agents/{name}/heartbeat", {"status": self.status})

    def __enter__(self) -> Heartbeats:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def populate_attention(api: Api) -> None:
    """On top of `populate`: one of each thing that needs attention (the server runs with short
    thresholds; keep the others alive with `Heartbeats` while dex falls silent)."""
    api.agent("dex", "worker", "working", "Porting the importer")
    importer = api.issue("Port the CSV importer", priority="p1", labels=["import"])
    api.claim(importer, "dex")
    api.call("POST", api.p + "/reservations", {"paths": ["src/importer/**"], "agent": "dex"})
    stuck = api.issue("Deploy to staging", priority="p0", labels=["ops"])
    api.call("PATCH", f"{api.p}/issues/{stuck}", {"status": "blocked"})
    api.call(
        "POST", f"{api.p}/issues/{stuck}/comments", {"body": "No staging credentials yet.", "agent": "ada"}
    )
    api.call(
        "POST",
        api.p + "/messages",
        {
            "subject": "Freeze main at 18:00",
            "body": "Acknowledge, please.",
            "to": ["brook", "cyd"],
            "ack_required": True,
            "importance": "high",
            "agent": "ada",
        },
    )
    api.call("POST", api.p + "/reservations", {"paths": ["src/api/**"], "agent": "brook", "ttl_s": 120})
    api.call("POST", api.p + "/reservations", {"paths": ["src/api/app.py"], "agent": "cyd", "mode": "strict"})
