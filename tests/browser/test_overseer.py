"""The overseer's pages in a real browser: leases, mail threads, an agent's page, the dependency
graph, the knowledge browser and search, trends — live, authorised, and agent content inert."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from ..support import ServerProcess
from .scenario import Api, populate, sign_out
from .test_attention import axe
from .test_dashboard import XSS, login, wait_live

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Api:
    api = Api(server.url, server.admin_token)
    populate(api)
    return api


def no_script_ran(page: Page, dialogs: list[str]) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []


def watch_dialogs(page: Page) -> list[str]:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def test_leases_page_lists_filters_and_follows_live(page: Page, server: ServerProcess, world: Api) -> None:
    dialogs = watch_dialogs(page)
    login(page, server.admin_token)
    page.get_by_role("link", name="Leases").click()
    wait_live(page)
    brook = page.locator("tr[data-holder=brook]")
    expect(brook).to_contain_text("src/auth/**")
    expect(brook).to_contain_text("exclusive")
    expect(brook).to_contain_text("session middleware")
    expect(brook.locator(".expires")).to_contain_text(re.compile(r"^in \d+ min$"))
    # the issue the lease serves (populate: #2), linked to its page
    served = brook.locator(".issue").get_by_role("link", name="#2 Session middleware")
    expect(served).to_have_attribute("href", "/issues/2?project=default")
    expect(brook.locator(".issue .status")).to_have_text("in progress")
    expect(page.locator("tr[data-holder=cyd] .issue")).to_have_text("—")  # cyd named no issue
    expect(page.locator("tr[data-holder=cyd]")).to_contain_text("shared")

    hostile = world.issue(XSS + " lease")
    world.call(
        "POST",
        world.p + "/reservations",
        {"paths": ["src/live/**"], "agent": "ada", "reason": "live", "issue": hostile},
    )
    ada = page.locator("tr[data-holder=ada]")
    expect(ada).to_contain_text("src/live/**")  # no reload
    expect(ada.locator(f".issue a[data-issue='{hostile}']")).to_have_text(f"#{hostile} {XSS} lease")
    no_script_ran(page, dialogs)  # the issue's title is shown as text
    expect(ada).not_to_have_class(re.compile(r"\bcontested\b"))
    world.call("POST", world.p + "/reservations", {"paths": ["src/live/x.py"], "agent": "cyd"})
    expect(ada).to_have_class(re.compile(r"\bcontested\b"))  # it refused cyd: highlighted, live
    expect(ada.locator(".conflict-badge")).to_have_text("refused 1 request")

    page.select_option("#lease-agent", "cyd")  # the filter submits itself
    expect(page).to_have_url(re.compile(r"agent=cyd"))
    expect(page.locator("tr[data-lease]")).to_have_count(1)
    expect(page.locator("tr[data-holder=cyd]")).to_contain_text("docs/**")
    page.locator("tr[data-holder=cyd]").get_by_role("link", name="cyd").click()
    expect(page).to_have_url(re.compile(r"/agents/cyd"))


def test_a_coordinator_ends_a_stale_lease_and_a_viewer_may_not(page: Page, world: Api) -> None:
    world.agent("stale", "worker", "idle", "")
    world.call(
        "POST", world.p + "/reservations", {"paths": ["src/stale/**"], "agent": "stale", "reason": XSS}
    )
    dialogs = watch_dialogs(page)
    _, viewer = world.token("viewer", "vera")
    login(page, viewer)
    page.goto("/leases?agent=stale")
    row = page.locator("tr[data-holder=stale]")
    expect(row.locator(".reason")).to_have_text(XSS)  # shown as text, never run
    no_script_ran(page, dialogs)
    expect(page.get_by_role("button", name="End lease")).to_have_count(0)
    lease_id = row.get_attribute("data-lease")
    csrf = page.locator("form.logout input[name=csrf]").get_attribute("value") or ""
    refused = page.request.post(f"/leases/{lease_id}/release", form={"csrf": csrf}, max_redirects=0)
    assert refused.status == 403 and "may not do agent.retire" in refused.text()

    _, coordinator = world.token("coordinator", "cleo")
    sign_out(page)
    lead = page.context.new_page()  # without the listener that dismisses every dialog
    login(lead, coordinator)
    lead.goto("/leases?agent=stale")
    lead.once("dialog", lambda dialog: dialog.accept())
    lead.locator("tr[data-holder=stale]").get_by_role("button", name="End lease").click()
    expect(lead.locator(".notice")).to_have_text("Lease ended.")
    expect(lead.locator("tr[data-holder=stale]")).to_have_count(0)
    expect(lead).to_have_url(re.compile(r"agent=stale"))
    audit = world.call("GET", "/audit?action=reservation.revoked")["items"]
    assert any(a["actor"] == "token:cleo" and a["details"]["pattern"] == "src/stale/**" for a in audit)
    live = world.call("GET", world.p + "/reservations")
    assert all(r["pattern"] != "src/stale/**" for r in live)


def test_mail_threads_show_bodies_as_text_with_read_and_ack_state_live(
    page: Page, server: ServerProcess, world: Api
) -> None:
    dialogs = watch_dialogs(page)
    sent = world.call(
        "POST",
        world.p + "/messages",
        {
            "subject": "Freeze " + XSS,
            "body": "Hold merges.\n" + XSS,
            "to": ["brook", "cyd"],
            "ack_required": True,
            "importance": "urgent",
            "thread_id": "freeze-thread",
            "agent": "ada",
        },
    )
    world.call("POST", f"{world.p}/agents/brook/inbox/ack", {"ids": [sent["id"]]})
    world.call("POST", world.p + "/messages", {"subject": "A person writes", "body": "Hi.", "to": ["ada"]})
    login(page, server.admin_token)
    page.get_by_role("link", name="Mail").click()
    wait_live(page)
    row = page.locator("tr[data-thread=freeze-thread]")
    expect(row.locator(".subject a")).to_have_text("Freeze " + XSS)
    expect(row).to_contain_text("urgent")
    expect(row.locator(".participants")).to_have_text("ada, brook, cyd")
    expect(page.locator("table.mail")).to_contain_text("Rebase on main before review")
    person = page.locator("tr", has_text="A person writes")
    expect(person.locator(".overseer")).to_have_text("token:bootstrap admin")

    page.check("#mail-unacked")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-thread]")).to_have_count(1)
    row.locator(".subject a").click()

    message = page.locator(f"#message-{sent['id']}")
    expect(message.locator(".body")).to_have_text("Hold merges.\n" + XSS)
    expect(message.locator("tr[data-recipient=brook] .acked")).to_contain_text("acknowledged")
    expect(message.locator("tr[data-recipient=cyd] .acked")).to_have_text("not acknowledged")
    expect(message.locator("tr[data-recipient=cyd] .read")).to_have_text("unread")
    wait_live(page)
    world.call("POST", f"{world.p}/agents/cyd/inbox/ack", {"ids": [sent["id"]]})  # seen without a reload
    expect(message.locator("tr[data-recipient=cyd] .acked")).to_contain_text(re.compile("^acknowledged"))
    expect(message.locator("tr[data-recipient=cyd] .read")).to_contain_text("read")
    no_script_ran(page, dialogs)

    page.goto("/mail")
    page.locator("tr", has_text="A person writes").locator(".subject a").click()
    expect(page.locator("article.from-overseer .overseer")).to_have_text("overseer")


def test_a_viewer_sees_who_wrote_what_but_no_bodies(page: Page, world: Api) -> None:
    sent = world.call(
        "POST",
        world.p + "/messages",
        {
            "subject": "Plan",
            "body": "Hold merges.",
            "to": ["brook"],
            "ack_required": True,
            "thread_id": "viewer-thread",
            "agent": "ada",
        },
    )
    world.call("POST", f"{world.p}/agents/brook/inbox/ack", {"ids": [sent["id"]]})
    _, viewer = world.token("viewer", "val")
    login(page, viewer)
    page.goto("/mail/thread?thread=viewer-thread")
    expect(page.locator("article.message")).to_have_count(1)
    expect(page.locator(".bodies-hidden")).to_contain_text("coordinator and admin tokens only")
    expect(page.locator("article.message .body")).to_have_count(0)
    assert "Hold merges." not in page.content()
    expect(page.locator("tr[data-recipient=brook] .acked")).to_contain_text("acknowledged")
    assert page.request.get("/mail/thread?thread=no-such-thread").status == 404


def test_an_agents_page_shows_its_work_live_and_its_text_inert(
    page: Page, server: ServerProcess, world: Api
) -> None:
    dialogs = watch_dialogs(page)
    login(page, server.admin_token)
    page.locator("tr[data-agent=brook]").get_by_role("link", name="brook").click()
    expect(page).to_have_url(re.compile(r"/agents/brook"))
    wait_live(page)
    expect(page.locator("article.agent h1 .name")).to_have_text("brook")
    expect(page.locator(".agent-issues")).to_contain_text("#2 Session middleware")
    expect(page.locator(".agent-leases")).to_contain_text("src/auth/**")
    served = page.locator(".agent-leases").get_by_role("link", name="#2 Session middleware")
    expect(served).to_have_attribute("href", "/issues/2?project=default")
    expect(page.locator(".agent-mail")).to_contain_text("Rebase on main before review")
    expect(page.locator(".agent-events")).to_contain_text("reservation.granted")

    world.call("POST", f"{world.p}/agents/brook/heartbeat", {"status": "blocked", "activity": XSS})
    expect(page.locator("article.agent .activity")).to_have_text(XSS)  # live, and as text
    expect(page.locator("article.agent h1 .status")).to_have_text("blocked")
    no_script_ran(page, dialogs)
    page.get_by_role("link", name="On the leases page").click()
    expect(page.locator("tr[data-lease]")).to_have_count(1)
    assert page.request.get("/agents/nobody").status == 404


def test_the_dependency_graph_is_drawn_with_its_critical_path_live(
    page: Page, server: ServerProcess, world: Api
) -> None:
    dialogs = watch_dialogs(page)
    login(page, server.admin_token)
    page.get_by_role("link", name="Dependencies").click()
    wait_live(page)
    # populate: #4 "Rate-limit failed logins" waits on #2 "Session middleware"
    expect(page.locator("svg.dep-graph a[data-issue='2']")).to_have_class(re.compile(r"\bcritical\b"))
    expect(page.locator("svg.dep-graph path[data-edge='2-4']")).to_have_class(re.compile(r"\bcritical\b"))
    expect(page.locator(".critical-path li")).to_have_text(
        ["#2 Session middleware", "#4 Rate-limit failed logins"]
    )
    first = world.issue(XSS + " first", priority="p0")
    second = world.issue("Second", depends_on=[first])
    third = world.issue("Third", depends_on=[second])
    world.issue("Fourth", depends_on=[third])
    expect(page.locator(".critical-path li")).to_have_count(4)  # a longer chain, without a reload
    expect(page.locator(".critical-path li").first).to_have_text(f"#{first} {XSS} first")
    expect(page.locator(f"svg.dep-graph path[data-edge='{first}-{second}']")).to_have_class(
        re.compile(r"\bcritical\b")
    )
    expect(page.locator(".unblockers li").first).to_contain_text("3 waiting")
    label = page.locator(f"svg.dep-graph a[data-issue='{first}'] text.label")
    expect(label).to_contain_text(f"#{first} <script>")
    no_script_ran(page, dialogs)
    page.locator(f"svg.dep-graph a[data-issue='{second}']").click()
    expect(page.locator("article.issue h1")).to_have_text(f"#{second} Second")


def test_the_knowledge_browser_reads_versions_and_searches_knowledge_and_mail(
    page: Page, server: ServerProcess, world: Api
) -> None:
    dialogs = watch_dialogs(page)
    entry = world.call(
        "POST",
        world.p + "/knowledge",
        {
            "kind": "decision",
            "title": "Cookies " + XSS,
            "body": "Sessions live in signed cookies.",
            "tags": ["auth"],
        },
    )
    world.call(
        "PATCH", f"{world.p}/knowledge/{entry['id']}", {"body": "Sessions live in signed cookies. " + XSS}
    )
    world.call(
        "POST",
        world.p + "/messages",
        {
            "subject": "Cookie rotation",
            "body": "Rotate the cookie secret weekly.",
            "to": ["brook"],
            "agent": "ada",
        },
    )
    login(page, server.admin_token)
    page.get_by_role("link", name="Knowledge").click()
    wait_live(page)
    expect(page.locator(f"tr[data-entry='{entry['id']}'] .subject")).to_have_text("Cookies " + XSS)
    world.call("POST", world.p + "/knowledge", {"kind": "note", "title": "Added live", "body": "x"})
    expect(page.locator("table.entries")).to_contain_text("Added live")  # without a reload

    page.fill("#search-q", "cookies secret")
    page.get_by_role("button", name="Search").click()
    hit = page.locator(f".knowledge-hits li[data-entry='{entry['id']}']")
    expect(hit.locator("mark").first).to_have_text(re.compile("cookies", re.I))
    expect(hit.locator("a")).to_have_text("Cookies " + XSS)
    mail = page.locator(".mail-hits li", has_text="Cookie rotation")
    expect(mail.locator(".snippet")).to_contain_text("Rotate the cookie secret weekly.")

    hit.locator("a").click()
    expect(page.locator("article.entry .body")).to_have_text("Sessions live in signed cookies. " + XSS)
    version = page.locator("details.version[data-version='1']")
    version.locator("summary").click()
    expect(version.locator(".body")).to_have_text("Sessions live in signed cookies.")
    no_script_ran(page, dialogs)

    _, viewer = world.token("viewer", "vince")
    sign_out(page)
    login(page, viewer)
    page.goto("/knowledge?q=weekly")  # a word only in the body: a viewer's search does not see it
    expect(page.locator(".mail-hits")).to_contain_text("No mail matches.")
    page.goto("/knowledge?q=rotation")
    expect(page.locator(".mail-hits li")).to_have_count(1)
    expect(page.locator(".mail-hits .snippet")).to_have_count(0)
    expect(page.locator(".mail-hits .hint")).to_contain_text("Subjects only")


def test_trends_chart_today_and_follow_live(page: Page, server: ServerProcess, world: Api) -> None:
    login(page, server.admin_token)
    page.get_by_role("link", name="Trends").click()
    wait_live(page)
    today = page.locator("[data-chart=issues-chart] rect[data-series=opened]").last
    before = int(today.get_attribute("data-value") or "0")
    assert before >= 6  # the scenario's issues, all opened today
    expect(page.locator("[data-chart=mail-chart] rect[data-series=messages]").last).not_to_have_attribute(
        "data-value", "0"
    )
    world.issue("One more for the chart")
    expect(today).to_have_attribute("data-value", str(before + 1))  # without a reload
    expect(page.locator("[data-chart=issues-chart] rect")).to_have_count(28)

    # Throughput per agent: cyd finished the token parser today (the scenario); brook's first
    # finished issue adds its series, live.
    throughput = page.locator("[data-chart=throughput-chart]")
    expect(throughput.locator("rect[data-series=cyd]").last).not_to_have_attribute("data-value", "0")
    brook = throughput.locator("rect[data-series=brook]")
    done_before = int(brook.last.get_attribute("data-value") or "0") if brook.count() else 0
    finished = world.issue("Finished by brook")
    world.claim(finished, "brook")
    world.call("POST", f"{world.p}/issues/{finished}/close", {"resolution": "done", "agent": "brook"})
    expect(brook.last).to_have_attribute("data-value", str(done_before + 1))
    expect(brook).to_have_count(14)  # one bar a day
    expect(throughput.locator("figcaption")).to_contain_text("brook")


def test_no_serious_accessibility_violations_on_the_overseer_pages(
    browser: Browser, server: ServerProcess, world: Api
) -> None:
    world.call(
        "POST",
        world.p + "/knowledge",
        {"kind": "note", "title": "A11y note", "body": "Cookie text", "tags": ["a"]},
    )
    entry = world.call("GET", world.p + "/knowledge")[0]["id"]
    thread = world.call(
        "POST", world.p + "/messages", {"subject": "A11y", "body": "b", "to": ["brook"], "ack_required": True}
    )["thread_id"]
    # The page's CSP (script-src 'self') would refuse the injected checker: bypass it for this audit only.
    context = browser.new_context(
        base_url=server.url, bypass_csp=True, viewport={"width": 1440, "height": 900}
    )
    try:
        page = context.new_page()
        login(page, server.admin_token)
        for path in (
            "/leases",
            "/mail",
            f"/mail/thread?thread={thread}",
            "/agents/brook",
            "/graph",
            "/knowledge",
            "/knowledge?q=cookie",
            f"/knowledge/{entry}",
            "/trends",
        ):
            page.goto(path)
            serious = axe(page)
            assert not serious, path + " " + json.dumps(serious, indent=1)[:4000]
    finally:
        context.close()
