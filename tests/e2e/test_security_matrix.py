"""The permission matrix: complete (every route, tool and prompt has an entry) and true (each role
is refused exactly where `PERMISSIONS` says), checked against a real server on every door."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from vibe_ensemble.api import access
from vibe_ensemble.api.app import create_app
from vibe_ensemble.api.mcp import build_mcp
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.permissions import PERMISSIONS
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

from ..support import ServerProcess, mcp_client, start_server
from .security_support import auth, error_code, make_token, query_params, request_body, sample

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ROLES = [TokenRole.VIEWER, TokenRole.WORKER, TokenRole.COORDINATOR, TokenRole.ADMIN]
QUICK = {"timeout_s": 0.1}  # long-polling entry points answer at once


def _runtime(tmp_path: Path) -> Runtime:
    return Runtime(Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"))


def test_every_http_route_has_an_entry(tmp_path: Path) -> None:
    app = create_app(_runtime(tmp_path))
    served = set(access.route_keys(app.routes))
    assert access.unmapped_routes(app.routes) == [], "add these routes to vibe_ensemble/api/access.py ROUTES"
    assert sorted(set(access.ROUTES) - served) == [], "ROUTES lists routes the app does not serve"


async def test_every_mcp_tool_prompt_and_resource_has_an_entry(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    server = build_mcp(runtime.settings, profile="full")
    tools = {t.name for t in await server.list_tools()}
    prompts = {p.name for p in await server.list_prompts()}
    resources = {str(r.uri) for r in await server.list_resources()}
    resources |= {t.uri_template for t in await server.list_resource_templates()}
    assert sorted(tools - set(access.TOOLS)) == [], "add these tools to vibe_ensemble/api/access.py TOOLS"
    assert sorted(set(access.TOOLS) - tools) == [], "TOOLS lists tools the full profile does not have"
    assert sorted(prompts ^ set(access.PROMPTS)) == [], "PROMPTS and the served prompts differ"
    assert sorted(resources ^ set(access.RESOURCES)) == [], "RESOURCES and the served resources differ"


def test_docs_table_is_generated_from_the_mapping() -> None:
    text = DOCS.read_text()
    assert access.splice(text) == text, "run: python -m vibe_ensemble.api.access --write docs/security.md"


def test_every_entry_of_the_table_has_a_role_that_may_use_it() -> None:
    every = [
        *access.ROUTES.items(),
        *access.TOOLS.items(),
        *access.PROMPTS.items(),
        *access.RESOURCES.items(),
    ]
    for key, entry in every:
        if entry.op is not None:
            assert entry.op in PERMISSIONS[TokenRole.ADMIN], key


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("matrix"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> dict[str, Any]:
    """One agent `probe`, one issue, a token to revoke, and a full-profile token per role."""
    admin = auth(server.admin_token)
    base = server.url + "/api/v1/projects/default"
    r = httpx2.post(base + "/agents", json={"name": "probe"}, headers=admin)
    assert r.status_code == 201, r.text
    r = httpx2.post(base + "/issues", json={"title": "probe issue"}, headers=admin)
    assert r.status_code == 201, r.text
    victim = httpx2.post(
        server.url + "/api/v1/tokens", json={"role": "viewer", "label": "victim"}, headers=admin
    ).json()["id"]
    return {
        "params": {
            "project": "default",
            "issue_id": str(r.json()["id"]),
            "name": "probe",
            "token_id": str(victim),
        },
        "tokens": {role: make_token(server, role.value) for role in ROLES},
    }


def test_rest_matrix_holds_for_every_role(server: ServerProcess, world: dict[str, Any]) -> None:
    openapi = httpx2.get(server.url + "/api/v1/openapi.json").json()
    checked = 0
    probed = [key for key, entry in access.ROUTES.items() if entry.op is not None and key[0] != "WS"]
    with httpx2.Client(base_url=server.url, timeout=10) as client:
        for role in ROLES:
            headers = auth(world["tokens"][role])
            for (method, path), entry in access.ROUTES.items():
                if entry.op is None or method == "WS":
                    continue
                operation = openapi["paths"].get(path, {}).get(method.lower(), {})
                body = request_body(operation, openapi)
                url = _fill(path, world["params"])
                query = query_params(operation, openapi, QUICK)
                with client.stream(method, url, headers=headers, json=body, params=query) as r:
                    status = r.status_code
                    text = (
                        r.read().decode()
                        if r.headers.get("content-type", "").startswith("application/json")
                        else ""
                    )
                what = f"{role.value} {method} {path} -> {status} {text[:200]}"
                if entry.op in PERMISSIONS[role]:
                    assert status not in (401, 403) and status < 500, what
                else:
                    assert status == 403 and '"permission_denied"' in text and entry.op.value in text, what
                checked += 1
    assert checked == len(ROLES) * len(probed)


async def test_mcp_matrix_holds_for_every_role(server: ServerProcess, world: dict[str, Any]) -> None:
    checked = 0
    for role in ROLES:
        async with mcp_client(server.mcp_url, world["tokens"][role]) as client:
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == set(access.TOOLS)
            for tool in tools:
                entry = access.TOOLS[tool.name]
                assert entry.op is not None
                arguments = sample(tool.input_schema, tool.input_schema.get("$defs", {}))
                arguments.update({k: v for k, v in QUICK.items() if k in tool.input_schema["properties"]})
                result = await client.call_tool(tool.name, arguments)
                text = result.content[0].text if result.is_error and result.content else ""  # type: ignore[union-attr]
                code = error_code(text)
                what = f"{role.value} {tool.name}({arguments}) -> {text[:200]}"
                assert code != "internal", what
                if entry.op in PERMISSIONS[role]:
                    assert code != "permission_denied", what
                else:
                    assert code == "permission_denied" and entry.op.value in text, what
                checked += 1
    assert checked == 4 * len(access.TOOLS)
