"""Every `invalid_input` answer of /api/v1 has one shape, whatever refused the request: the schema
(FastAPI's validation), the body's reading, the query's check or a service. `details` names the
first problem (`field`, `rule`) and lists every problem (`errors`, each `{field, rule}`)."""

from __future__ import annotations

from typing import Any

import httpx2

from vibe_ensemble.api.app import create_app
from vibe_ensemble.runtime import Runtime

P = "/api/v1/projects/default"
JSON = {"content-type": "application/json"}


def refusal(answer: httpx2.Response) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input", error
    details = error["details"]
    errors = details["errors"]
    assert isinstance(errors, list) and errors, details
    assert all(set(item) == {"field", "rule"} for item in errors), details
    assert errors[0] == {"field": details["field"], "rule": details["rule"]}, details
    assert error["message"] == f"{details['field']}: {details['rule']}"
    return dict(details)


async def test_every_invalid_input_answer_lists_its_problems(runtime: Runtime) -> None:
    token = await runtime.bootstrap_admin_token()
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    ) as api:
        # the schema: every problem listed
        schema = refusal(await api.post(f"{P}/issues", json={"title": 5, "priority": "p9"}))
        assert [e["field"] for e in schema["errors"]] == ["title", "priority"]
        # a service: its one problem, listed the same way
        service = refusal(await api.post(f"{P}/issues", json={"title": " "}))
        assert service == {
            "field": "title",
            "rule": "must not be empty",
            "errors": [{"field": "title", "rule": "must not be empty"}],
        }
        # a service's refusal with more to say keeps it beside the list
        mail = {"subject": "s", "body": "b", "to": ["nobody"]}
        unknown = refusal(await api.post(f"{P}/messages", json=mail))
        assert unknown["agent"] == "nobody"
        assert unknown["errors"] == [{"field": "to", "rule": unknown["rule"]}]
        # a query parameter the endpoint does not take
        query = refusal(await api.get(f"{P}/issues", params={"stauts": "open"}))
        assert [e["field"] for e in query["errors"]] == ["stauts"]
        # a body that reads as no JSON value at all
        unreadable = refusal(await api.post(f"{P}/issues", content=b'{"title": "\xff"}', headers=JSON))
        assert unreadable["errors"] == [{"field": "body", "rule": "must be JSON in UTF-8"}]
