""" "Needs attention" in a real browser: a scripted team of agents, driven over the real server into
each attention state, appears on an open board without a reload; the release action is clicked;
and axe-core (vendored, pinned) finds no serious accessibility violations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from vibe_ensemble.guard import hook

from ..support import ServerProcess, start_server
from .scenario import Api, Heartbeats, sign_out

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.11.0"
SILENT_AFTER_S = 4  # VIBE_OFFLINE_AFTER_S: how soon a quiet agent counts as silent
ACK_AFTER_S = 3  # VIBE_ATTENTION_ACK_AFTER_S
LEASE_WARNING_S = 120  # VIBE_ATTENTION_LEASE_WARNING_S: a 60 s lease is inside it at once


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "VIBE_OFFLINE_AFTER_S": str(SILENT_AFTER_S),
        "VIBE_SWEEP_INTERVAL_S": "1",
        "VIBE_ATTENTION_ACK_AFTER_S": str(ACK_AFTER_S),
        "VIBE_ATTENTION_LEASE_WARNING_S": str(LEASE_WARNING_S),
    }
    proc = start_server(tmp_path_factory.mktemp("attention"), extra_env=env)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Api:
    return Api(server.url, server.admin_token)


def project(server: ServerProcess, admin: Api, slug: str) -> Api:
    """A project of its own for each test, and a client for it."""
    admin.call("POST", "/projects", {"slug": slug, "name": slug.title()})
    return Api(server.url, server.admin_token, slug)


def login(page: Page, token: str, slug: str) -> None:
    page.goto("/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.goto(f"/?project={slug}")
    expect(page.locator("#attention-title")).to_be_visible()
    expect(page.locator("#live-status")).to_have_text("live")


def item(page: Page, rule: str, **data: str | int) -> Locator:
    selector = f'#attention li[data-rule="{rule}"]' + "".join(f'[data-{k}="{v}"]' for k, v in data.items())
    return page.locator(selector)


def test_a_calm_project_says_all_is_well(page: Page, server: ServerProcess, admin: Api) -> None:
    calm = project(server, admin, "calm")
    calm.agent("quiet-one", "worker", "idle")
    login(page, server.admin_token, "calm")
    expect(page.locator("#attention .all-well")).to_contain_text("All is well")
    expect(page.locator("#attention-title .count")).to_have_text("0")


def test_each_attention_state_appears_live(page: Page, server: ServerProcess, admin: Api) -> None:
    team = project(server, admin, "trouble")
    login(page, server.admin_token, "trouble")
    expect(page.locator("#attention .all-well")).to_be_visible()
    marker = page.evaluate("() => (window.__same_page = 1)")  # a reload would lose this

    team.agent("ana", "worker", "working")
    team.agent("eve", "worker", "working")
    team.agent("sam", "worker", "working")
    with Heartbeats(team, ["ana", "eve"]):
        # blocked: waiting on a dependency, and marked blocked with a reason in a comment
        base = team.issue("Schema migration", priority="p1")
        team.claim(base, "ana")
        waiting = team.issue("Backfill the new column", depends_on=[base])
        stuck = team.issue("Deploy to staging", priority="p0")
        team.call("PATCH", f"{team.p}/issues/{stuck}", {"status": "blocked"})
        team.call("POST", f"{team.p}/issues/{stuck}/comments", {"body": "No staging credentials yet."})
        row = item(page, "blocked", issue=waiting)
        expect(row).to_contain_text(f"waits on #{base}")
        expect(item(page, "blocked", issue=stuck)).to_contain_text("No staging credentials yet.")

        # a silent agent holding an issue and a lease: sam stops sending heartbeats
        held = team.issue("Rewrite the importer")
        team.claim(held, "sam")
        team.call("POST", team.p + "/reservations", {"paths": ["src/importer/**"], "agent": "sam"})
        silent = item(page, "silent", agent="sam")
        expect(silent).to_contain_text(
            f"#{held} Rewrite the importer", timeout=SILENT_AFTER_S * 1000 + 15_000
        )
        expect(silent).to_contain_text("src/importer/**")

        # a lease about to end while its holder works
        team.call("POST", team.p + "/reservations", {"paths": ["src/api/**"], "agent": "eve", "ttl_s": 60})
        expect(item(page, "expiring", agent="eve")).to_contain_text("src/api/**")

        # mail that asked for an acknowledgement: no event marks it overdue, the panel's timer does
        sent = team.call(
            "POST",
            team.p + "/messages",
            {"subject": "Freeze main at 18:00", "body": "Ack please.", "to": ["ana"], "ack_required": True},
        )
        overdue = item(page, "unacked", message=sent["id"])
        expect(overdue).to_contain_text("not acknowledged by ana", timeout=ACK_AFTER_S * 1000 + 15_000)
        team.call("POST", f"{team.p}/agents/ana/inbox/ack", {"ids": [sent["id"]]})
        expect(overdue).to_have_count(0)

        # conflicts: a strict lease refused, and a commit the guard refused
        refused = team.call(
            "POST",
            team.p + "/reservations",
            {"paths": ["src/api/routes.py"], "agent": "ana", "mode": "strict"},
        )
        assert refused["granted"] == [] and refused["conflicts"]
        expect(item(page, "conflict", agent="ana")).to_contain_text("a strict lease on src/api/routes.py")
        found = hook.ask_server(
            server.url, server.admin_token, "trouble", "ana", ["src/api/app.py"], report=True
        )
        assert found and found[0]["holder"] == "eve"
        expect(
            page.locator('#attention li[data-rule="conflict"]', has_text="tried to commit")
        ).to_contain_text("src/api/app.py")
    assert page.evaluate("() => window.__same_page") == marker  # all of it arrived without a reload
    expect(page.locator("#attention-title .count")).not_to_have_text("0")


def test_the_release_action_frees_a_silent_agents_work(page: Page, server: ServerProcess, admin: Api) -> None:
    team = project(server, admin, "release")
    team.agent("gone", "worker", "working")
    held = team.issue("Half-done refactor")
    team.claim(held, "gone")
    team.call("POST", team.p + "/reservations", {"paths": ["lib/**"], "agent": "gone"})
    _, coordinator = admin.token("coordinator", "lead", project="release")
    _, viewer = admin.token("viewer", "watcher", project="release")

    login(page, viewer, "release")
    expect(item(page, "silent", agent="gone")).to_be_visible(timeout=SILENT_AFTER_S * 1000 + 15_000)
    expect(page.locator("#attention button", has_text="Release work")).to_have_count(0)  # a viewer may not
    sign_out(page)

    login(page, coordinator, "release")
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.locator('#attention li[data-agent="gone"] button', has_text="Release work").click()
    expect(page.locator(".notice")).to_have_text("Agent's work released.")
    assert dialogs and "Release gone's work?" in dialogs[0]
    expect(item(page, "silent", agent="gone")).to_have_count(0)
    expect(page.locator('section.column[data-column="ready"]')).to_contain_text("Half-done refactor")
    assert team.call("GET", team.p + "/reservations") == []
    audit = admin.call("GET", "/audit?action=agent.work_released")
    entries = audit["items"] if isinstance(audit, dict) else audit
    assert any(e["details"].get("agent") == "gone" for e in entries), entries


def test_every_item_links_to_where_it_is_resolved(page: Page, server: ServerProcess, admin: Api) -> None:
    team = project(server, admin, "links")
    first = team.issue("Pick a queue")
    second = team.issue("Wire the consumer", depends_on=[first])
    login(page, server.admin_token, "links")
    row = item(page, "blocked", issue=second)
    row.get_by_role("link", name=f"#{first}").click()
    expect(page.locator("h1")).to_contain_text("Pick a queue")


def axe(page: Page) -> list[dict[str, object]]:
    page.add_script_tag(path=str(AXE))
    assert page.evaluate("() => axe.version") == AXE_VERSION
    result = page.evaluate("async () => (await axe.run(document)).violations")
    assert isinstance(result, list)
    return [v for v in result if v.get("impact") in ("serious", "critical")]


def test_no_serious_accessibility_violations(browser: Browser, server: ServerProcess, admin: Api) -> None:
    team = project(server, admin, "a11y")
    team.agent("ana", "coordinator", "working", "Reviewing")
    first = team.issue("Parser", priority="p1", labels=["core"])
    team.issue("Printer", depends_on=[first])
    team.call(
        "POST",
        team.p + "/messages",
        {"subject": "Hello", "body": "Read me", "to": ["ana"], "ack_required": True},
    )
    # The page's CSP (script-src 'self') would refuse the injected checker: bypass it for this audit only.
    context = browser.new_context(
        base_url=server.url, bypass_csp=True, viewport={"width": 1440, "height": 900}
    )
    try:
        page = context.new_page()
        login(page, server.admin_token, "a11y")
        for path in ("/?project=a11y", f"/issues/{first}?project=a11y", "/mail?project=a11y"):
            page.goto(path)
            serious = axe(page)
            assert not serious, json.dumps(serious, indent=1)[:4000]
    finally:
        context.close()
