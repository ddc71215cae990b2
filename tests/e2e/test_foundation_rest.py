"""REST under /api/v1 against a real server: the issue lifecycle, mail, the event log, errors."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.support import ServerProcess

P = "/api/v1/projects/default"


def client(server: ServerProcess, token: str) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def ok(response: httpx2.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    result: dict[str, Any] = body["error"]
    return result


def test_issue_lifecycle_and_mail(server: ServerProcess) -> None:
    with client(server, server.admin_token) as api:
        assert ok(api.post(f"{P}/agents", json={"name": "lead", "role": "coordinator"}), 201)["role"] == (
            "coordinator"
        )
        ok(api.post(f"{P}/agents", json={"name": "w1", "capabilities": ["sql"]}), 201)

        base = ok(api.post(f"{P}/issues", json={"title": "schema", "labels": ["sql"], "agent": "lead"}), 201)
        assert (base["status"], base["version"], base["created_by"]) == ("open", 1, "lead")
        top = ok(
            api.post(f"{P}/issues", json={"title": "api", "depends_on": [base["id"]], "priority": "p1"}), 201
        )
        listed = ok(api.get(f"{P}/issues", params={"ready": "true"}))
        assert [i["id"] for i in listed["items"]] == [base["id"]]
        assert ok(api.get(f"{P}/issues", params={"limit": 1}))["next_cursor"] == str(base["id"])

        patched = ok(
            api.patch(f"{P}/issues/{base['id']}", json={"body": "use sqlite", "expected_version": 1})
        )
        assert (patched["body"], patched["version"]) == ("use sqlite", 2)
        claimed = ok(api.post(f"{P}/issues/claim", json={"agent": "w1"}))
        assert (claimed["id"], claimed["assignee"], claimed["status"]) == (base["id"], "w1", "in_progress")
        comment = ok(
            api.post(f"{P}/issues/{base['id']}/comments", json={"body": "half way", "agent": "w1"}), 201
        )
        assert comment["author"] == "w1"
        closed = ok(
            api.post(f"{P}/issues/{base['id']}/close", json={"resolution": "migrated", "agent": "w1"})
        )
        assert closed["issue"]["status"] == "done"
        assert [i["id"] for i in closed["now_ready"]] == [top["id"]]
        detail = ok(api.get(f"{P}/issues/{top['id']}"))
        assert detail["ready"] is True
        assert [d["id"] for d in detail["dependencies"]] == [base["id"]]
        assert ok(api.post(f"{P}/issues/{top['id']}/claim", json={"agent": "w1"}))["assignee"] == "w1"

        sent = ok(
            api.post(
                f"{P}/messages",
                json={
                    "to": ["w1"],
                    "subject": "status?",
                    "body": "how goes",
                    "agent": "lead",
                    "ack_required": True,
                },
            ),
            201,
        )
        inbox = ok(api.get(f"{P}/agents/w1/inbox"))
        assert [i["message"]["id"] for i in inbox["items"]] == [sent["id"]]
        assert inbox["unread"] == 1
        assert ok(api.get(f"{P}/agents/w1/inbox"))["unread"] == 1  # fetching did not mark it read
        assert ok(api.post(f"{P}/agents/w1/inbox/ack", json={"ids": [sent["id"]]})) == [sent["id"]]
        item = ok(api.get(f"{P}/agents/w1/inbox"))["items"][0]
        assert item["read_at"] is not None
        assert item["acked_at"] is not None
        reply = ok(
            api.post(
                f"{P}/messages",
                json={
                    "to": ["lead"],
                    "subject": "re",
                    "body": "fine",
                    "agent": "w1",
                    "thread_id": sent["thread_id"],
                },
            ),
            201,
        )
        assert reply["thread_id"] == sent["thread_id"]
        beat = ok(api.post(f"{P}/agents/lead/heartbeat", json={"status": "working"}))
        assert beat["unread_messages"] == 1


def test_events_page_after_an_id(server: ServerProcess) -> None:
    with client(server, server.admin_token) as api:
        for i in range(5):
            ok(api.post(f"{P}/issues", json={"title": f"issue {i}"}), 201)
        everything = ok(api.get("/api/v1/events", params={"limit": 1000}))["items"]
        seen: list[int] = []
        after = 0
        while True:
            page = ok(api.get("/api/v1/events", params={"after": after, "limit": 3}))
            if not page["items"]:
                assert page["last_id"] == after
                break
            seen += [e["id"] for e in page["items"]]
            after = page["last_id"]
        assert seen == [e["id"] for e in everything]
        assert seen == sorted(seen)
        created = ok(api.get("/api/v1/events", params={"types": "issue.created"}))["items"]
        assert [e["payload"]["title"] for e in created] == [f"issue {i}" for i in range(5)]
        family = ok(api.get("/api/v1/events", params=[("types", "issue.*"), ("project", "default")]))
        assert {e["type"] for e in family["items"]} == {"issue.created", "issue.ready"}


def test_errors_are_json_with_status(server: ServerProcess) -> None:
    with client(server, server.admin_token) as api:
        ok(api.post(f"{P}/issues", json={"title": "exists"}), 201)
        ok(api.post(f"{P}/agents", json={"name": "beater"}), 201)
        before = ok(api.get("/api/v1/events"))["last_id"]

        bad_json = error(
            api.post(f"{P}/issues", content=b'{"title": ', headers={"content-type": "application/json"}),
            422,
            "invalid_input",
        )
        assert bad_json["message"].startswith("body: invalid JSON at character 10")
        json_ct = {"content-type": "application/json"}
        unreadable = {  # JSON that parses as nothing at all: still the field and the rule
            b"[" * 100_000 + b"]" * 100_000: "body: is nested too deeply to read",
            b'{"title": "t", "priority": ' + b"9" * 5000 + b"}": "body: holds a number with too many digits",
            b'{"title": "\xff\xfe"}': "body: must be JSON in UTF-8",
        }
        for raw, message in unreadable.items():
            refused = error(api.post(f"{P}/issues", content=raw, headers=json_ct), 422, "invalid_input")
            assert (refused["message"], refused["details"]["field"]) == (message, "body")
        wrong_type = error(api.post(f"{P}/issues", json={"title": 5}), 422, "invalid_input")
        assert wrong_type["message"] == "title: Input should be a valid string"
        assert wrong_type["details"] == {  # the first problem as every refusal names one, and all of them
            "field": "title",
            "rule": "Input should be a valid string",
            "errors": [{"field": "title", "rule": "Input should be a valid string"}],
        }
        # a list over its limit reads as the MCP door says it (docs/security.md), not in pydantic's words
        many = error(api.post(f"{P}/issues", json={"title": "t", "labels": ["x"] * 33}), 422, "invalid_input")
        assert many["message"] == "labels: must be at most 32 items (got 33)"
        long = error(api.post(f"{P}/issues", json={"title": "t" * 201}), 422, "invalid_input")
        assert long["message"] == "title: must be at most 200 characters (got 201)"
        # JSON's types are the schema's: no id from "1" or true, no boolean from "yes"
        for ids in (["1"], [True]):
            lax = error(api.post(f"{P}/issues", json={"title": "t", "depends_on": ids}), 422, "invalid_input")
            assert lax["message"] == "depends_on[0]: Input should be a valid integer"
        yes = {"subject": "s", "body": "b", "broadcast": "yes"}
        assert error(api.post(f"{P}/messages", json=yes), 422, "invalid_input")["message"] == (
            "broadcast: Input should be a valid boolean"
        )
        bad_enum = error(api.post(f"{P}/issues", json={"title": "t", "priority": "p9"}), 422, "invalid_input")
        assert bad_enum["message"].startswith("priority: ")
        unknown_field = error(
            api.post(f"{P}/issues", json={"title": "t", "colour": "red"}), 422, "invalid_input"
        )
        assert unknown_field["message"].startswith("colour: not a field of this request's body; it takes: ")
        assert "title, body, " in unknown_field["message"], unknown_field
        empty = error(api.post(f"{P}/issues", json={"title": " "}), 422, "invalid_input")
        assert empty["message"] == "title: must not be empty"
        assert empty["details"] == {  # a service's refusal: the same shape, its one problem listed
            "field": "title",
            "rule": "must not be empty",
            "errors": [{"field": "title", "rule": "must not be empty"}],
        }
        oversize = error(
            api.post(f"{P}/issues", json={"title": "t", "body": "x" * 65_537}), 422, "invalid_input"
        )
        assert oversize["message"].startswith("body: ")
        bad_query = error(api.get("/api/v1/events", params={"after": "abc"}), 422, "invalid_input")
        assert bad_query["message"].startswith("after: ")
        # a query parameter named `query` is named, not mistaken for the location
        no_words = error(api.get(f"{P}/knowledge/search"), 422, "invalid_input")
        assert no_words["details"]["errors"] == [{"field": "query", "rule": "Field required"}]
        offline = error(
            api.post(f"{P}/agents/beater/heartbeat", json={"status": "offline"}), 422, "invalid_input"
        )
        assert offline["message"] == "status: Input should be 'idle', 'working' or 'blocked'"

        missing = error(api.get(f"{P}/issues/999"), 404, "not_found")
        assert missing == {
            "code": "not_found",
            "message": "issue 999 does not exist in this project",
            "details": {"id": 999},
        }
        error(api.patch(f"{P}/issues/999", json={"title": "x"}), 404, "not_found")
        for written in ("1.0", "+1", "\u0661"):  # an id in the path is ASCII digits, as written
            lax = error(api.get(f"{P}/issues/{written}"), 422, "invalid_input")
            assert lax["message"] == "issue_id: must be an id: digits only"
        error(api.get("/api/v1/projects/nowhere/issues"), 404, "not_found")
        error(api.get("/api/v1/no/such/route"), 404, "not_found")

        stale = error(
            api.patch(f"{P}/issues/1", json={"title": "x", "expected_version": 5}), 409, "version_conflict"
        )
        assert stale["details"]["current_version"] == 1
        assert "is at version 1, not 5" in stale["message"]

        cycle = ok(api.post(f"{P}/issues", json={"title": "second", "depends_on": [1]}), 201)
        looped = error(api.patch(f"{P}/issues/1", json={"depends_on": [cycle["id"]]}), 422, "invalid_input")
        assert looped["message"] == f"depends_on: would create a dependency cycle: #1 -> #{cycle['id']} -> #1"

        after = ok(api.get("/api/v1/events"))["items"]
        assert [e["type"] for e in after if e["id"] > before] == ["issue.created"]  # only the good request
    unauthenticated = error(httpx2.get(server.url + f"{P}/issues"), 401, "unauthenticated")
    assert unauthenticated["message"].startswith("missing bearer token: send ")
    with client(server, "vibe_" + "Z" * 43) as stranger:
        error(stranger.get(f"{P}/issues"), 401, "unauthenticated")


def test_a_query_parameter_an_endpoint_does_not_take_is_refused(server: ServerProcess) -> None:
    """A misspelt filter is bad input naming it, not ignored (the whole unfiltered list came back as
    if filtered); the endpoint's own parameters still work, on every route, its dependencies' too."""
    with client(server, server.admin_token) as api:
        ok(api.post(f"{P}/knowledge", json={"kind": "note", "title": "sqlite locks", "body": "b"}), 201)
        refused = error(api.get(f"{P}/knowledge", params={"query": "sqlite"}), 422, "invalid_input")
        rule = "not a query parameter of this endpoint; it takes: kind, limit, tags"
        assert refused["message"] == f"query: {rule}"
        assert refused["details"]["field"] == "query"
        ok(api.get(f"{P}/knowledge", params={"kind": "note"}))
        error(api.get(f"{P}/issues", params={"stauts": "open"}), 422, "invalid_input")
        ok(api.get(f"{P}/issues", params={"status": "open", "limit": 5}))
        error(api.get("/api/v1/events", params={"since": "0", "x": "1"}), 422, "invalid_input")
        # one value given twice was read as the last alone; a list parameter takes many
        twice = error(
            api.get(f"{P}/issues", params=[("status", "open"), ("status", "done")]), 422, "invalid_input"
        )
        assert twice["message"] == "status: give this query parameter once"
        error(api.get(f"{P}/issues", params=[("limit", "1"), ("limit", "2")]), 422, "invalid_input")
        ok(api.get("/api/v1/events", params=[("types", "issue.*"), ("types", "message.*")]))
        ok(api.get(f"{P}/knowledge", params=[("tags", "a"), ("tags", "b")]))


def test_a_time_without_a_timezone_is_refused_naming_it(server: ServerProcess) -> None:
    """Whose 10:00 would it be? The audit log's `since` (and a token's expiry) must say."""
    with client(server, server.admin_token) as api:
        naive = error(api.get("/api/v1/audit", params={"since": "2026-12-02T10:00:00"}), 422, "invalid_input")
        assert naive["message"] == "since: must include a timezone, e.g. 2030-01-31T12:00:00Z"
        ok(api.get("/api/v1/audit", params={"since": "2026-12-02T10:00:00+02:00"}))
        outcome = error(api.get("/api/v1/audit", params={"outcome": "bogus"}), 422, "invalid_input")
        assert outcome["details"]["field"] == "outcome"
        expiry = {"role": "viewer", "label": "naive", "expires_at": "2099-01-01T00:00:00"}
        error(api.post("/api/v1/tokens", json=expiry), 422, "invalid_input")


def test_tokens_show_their_tool_profile(server: ServerProcess) -> None:
    with client(server, server.admin_token) as api:
        body = {
            "role": "worker",
            "project": "default",
            "agent": "w9",
            "label": "wide",
            "tool_profile": "full",
        }
        created = ok(api.post("/api/v1/tokens", json=body), 201)
        assert created["tool_profile"] == "full"
        plain = ok(api.post("/api/v1/tokens", json={"role": "viewer", "label": "plain"}), 201)
        assert plain["tool_profile"] is None  # served the server's VIBE_TOOL_PROFILE
        listed = {t["id"]: t for t in ok(api.get("/api/v1/tokens"))}
        assert listed[created["id"]]["tool_profile"] == "full" and listed[plain["id"]]["tool_profile"] is None
        revoked = ok(api.delete(f"/api/v1/tokens/{created['id']}"))
        assert revoked["tool_profile"] == "full"
        refused = error(
            api.post("/api/v1/tokens", json={"role": "viewer", "tool_profile": "huge"}), 422, "invalid_input"
        )
        assert refused["details"]["field"] == "tool_profile"
    spec = ok(httpx2.get(server.url + "/api/v1/openapi.json"))["components"]["schemas"]
    assert (
        "tool_profile" in spec["TokenOut"]["required"] and "tool_profile" in spec["Credential"]["properties"]
    )


def test_openapi_and_health(server: ServerProcess) -> None:
    spec = ok(httpx2.get(server.url + "/api/v1/openapi.json"))
    assert spec["info"]["title"] == "Vibe Ensemble"
    paths = spec["paths"]
    for path in (
        "/api/v1/projects/{project}/issues",
        "/api/v1/projects/{project}/issues/{issue_id}",
        "/api/v1/projects/{project}/issues/{issue_id}/claim",
        "/api/v1/projects/{project}/messages",
        "/api/v1/events",
        "/api/v1/tokens",
    ):
        assert path in paths, path
    assert ok(httpx2.get(server.url + "/healthz")) == {"status": "ok"}
    assert ok(httpx2.get(server.url + "/readyz")) == {"status": "ready", "database": "sqlite"}


def test_a_body_of_optional_fields_may_be_left_out(server: ServerProcess) -> None:
    """`curl -X POST …/claim` with no `-d` was 422 "body: Field required": no body is `{}`, on every
    route whose body has no required field (and the OpenAPI document says the body is optional)."""
    spec = ok(httpx2.get(server.url + "/api/v1/openapi.json"))
    schemas = spec["components"]["schemas"]
    optional = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is None:
                continue
            ref = body["content"]["application/json"]["schema"]["$ref"]
            if not schemas[ref.rsplit("/", 1)[1]].get("required"):
                assert not body.get("required"), (method, path)
                optional.append((method, path))
    assert {
        ("post", "/api/v1/projects/{project}/issues/{issue_id}/claim"),
        ("post", "/api/v1/projects/{project}/agents/{name}/heartbeat"),
        ("post", "/api/v1/projects/{project}/reservations/release"),
    } <= set(optional), optional
    with client(server, server.admin_token) as api:
        for project in ("default", "no-such-project"):  # an id or a name that is not there: nothing changes
            for method, path in optional:
                if (method, project) == ("post", "default") and path.endswith("/agents"):
                    continue  # `{}` registers an agent (a name made up): it is the one below
                url = path.format(project=project, issue_id=999999, entry_id=999999, name="nobody")
                empty, absent = api.request(method, url, json={}), api.request(method, url)
                assert (absent.status_code, absent.json()) == (empty.status_code, empty.json()), url
                assert "Field required" not in absent.text, (url, absent.text)
        made = ok(api.post(f"{P}/agents"), 201)
        assert ok(api.post(f"{P}/agents/{made['name']}/heartbeat"))["agent"]["name"] == made["name"]
