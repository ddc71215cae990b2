"""OpenTelemetry tracing: a real server exports its spans over OTLP/HTTP to a receiver on loopback.

The receiver is a small HTTP server started by the test: it accepts `POST /v1/traces` and decodes
the protobuf with opentelemetry-proto, as a collector would.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support import call, call_error, mcp_client, run_cli, start_server, wait_until

SECRET_BODY = "TOP-SECRET-BODY-7c1e"
TRACEPARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span it was sent, and the raw bodies."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.take(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            status=s.status.code,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            resource=resource,
                        )
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans += found

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def test_requests_and_tool_calls_arrive_as_spans(tmp_path: Path, receiver: Receiver) -> None:
    server = start_server(
        tmp_path,
        extra_env={
            "VIBE_OTEL_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not every 5 s
            "OTEL_SERVICE_NAME": "vibe-test",
            "VIBE_LOG_JSON": "true",
        },
    )
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}", "X-Request-ID": "req-trace-1"}
        # A caller's trace context is continued.
        headers["traceparent"] = f"00-{TRACEPARENT_TRACE}-00f067aa0ba902b7-01"
        r = httpx2.get(f"{server.url}/api/v1/projects/default/issues?query=hidden-query", headers=headers)
        assert r.status_code == 200, r.text
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "register_agent", name="ada", role="coordinator", project="default")
            await call(client, "register_agent", name="bob", role="worker")
            await call(client, "send_message", subject="plan", body=SECRET_BODY, to=["bob"], agent="ada")
            assert "[not_found]" in await call_error(client, "claim_issue", id=424242, agent="bob")
        assert httpx2.get(f"{server.url}/healthz").status_code == 200
        wait_until(
            lambda: (
                receiver.named("tools/call claim_issue")
                and receiver.named("GET /api/v1/projects/{project}/issues")
            ),
            what="the spans to arrive",
        )
    finally:
        server.stop()

    # The REST request: one SERVER span named by the route template, in the caller's trace.
    [rest] = receiver.named("GET /api/v1/projects/{project}/issues")
    assert rest.kind == 2  # SPAN_KIND_SERVER
    assert rest.trace_id == TRACEPARENT_TRACE and rest.parent_id == "00f067aa0ba902b7"
    assert rest.attributes["http.route"] == "/api/v1/projects/{project}/issues"
    assert rest.attributes["http.request.method"] == "GET"
    assert rest.attributes["http.response.status_code"] == 200
    assert rest.attributes["vibe.request_id"] == "req-trace-1"
    assert rest.attributes["vibe.project"] == "default" and rest.attributes["vibe.role"] == "admin"
    assert isinstance(rest.attributes["vibe.credential_id"], int)
    assert rest.resource["service.name"] == "vibe-test"

    # Each tool call: a span under its /mcp request's span, with the tool, the outcome and who.
    sent = receiver.named("tools/call send_message")
    assert len(sent) == 1
    assert sent[0].attributes["gen_ai.tool.name"] == "send_message"
    assert sent[0].attributes["vibe.outcome"] == "ok" and sent[0].status != 2
    assert sent[0].attributes["vibe.agent"] == "ada"
    mcp_posts = {s.span_id: s for s in receiver.named("POST /mcp")}
    assert sent[0].parent_id in mcp_posts
    assert mcp_posts[sent[0].parent_id].trace_id == sent[0].trace_id
    assert mcp_posts[sent[0].parent_id].attributes["http.route"] == "/mcp"
    [missing] = receiver.named("tools/call claim_issue")
    assert missing.attributes["vibe.outcome"] == "not_found" and missing.attributes["vibe.agent"] == "bob"
    assert missing.status == 2  # STATUS_CODE_ERROR
    registered = receiver.named("tools/call register_agent")
    assert sorted(str(s.attributes.get("vibe.project")) for s in registered) == ["None", "default"]

    # Probes are not traced; no body, token or query string ever leaves the process.
    assert not receiver.named("GET /healthz")
    exported = b"".join(receiver.bodies)
    assert SECRET_BODY.encode() not in exported
    assert server.admin_token.encode() not in exported and server.admin_token[:16].encode() not in exported
    assert b"hidden-query" not in exported

    # Every log line written while serving a request carries its trace id.
    logged = [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]
    [line] = [x for x in logged if x.get("event") == "http_request" and x.get("request_id") == "req-trace-1"]
    assert line["trace_id"] == TRACEPARENT_TRACE
    tool_lines = [x for x in logged if x.get("tool") == "send_message"]
    assert [x["trace_id"] for x in tool_lines] == [sent[0].trace_id]


def _under(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]


async def test_database_transactions_and_statements_are_spans_under_their_call(
    tmp_path: Path, receiver: Receiver, database_url: str
) -> None:
    system = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    env = {"VIBE_OTEL_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = start_server(tmp_path, database_url=database_url, extra_env=env)
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        r = httpx2.get(f"{server.url}/api/v1/projects/default/issues", headers=headers)
        assert r.status_code == 200, r.text
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "register_agent", name="ada", role="coordinator", project="default")
            await call(client, "register_agent", name="bob", role="worker")
            await call(client, "send_message", subject="plan", body=SECRET_BODY, to=["bob"], agent="ada")
            await call(client, "create_issue", title="a task", agent="ada")
            # refused inside its write transaction: the transaction is rolled back
            assert "[not_found]" in await call_error(client, "claim_issue", id=424242, agent="bob")
        wait_until(
            lambda: (
                receiver.named("tools/call claim_issue")
                and receiver.named("GET /api/v1/projects/{project}/issues")
            ),
            what="the spans to arrive",
        )
    finally:
        server.stop()  # sends what is still queued
    with receiver.lock:
        spans = list(receiver.spans)

    # A REST request's read: a transaction span under the request's span, its statements under it.
    [rest] = receiver.named("GET /api/v1/projects/{project}/issues")
    reads = [s for s in _under(spans, rest) if s.name == "db.transaction read"]
    assert reads, [s.name for s in _under(spans, rest)]
    for read in reads:
        assert read.kind == 3  # SPAN_KIND_CLIENT
        assert read.attributes["db.system.name"] == system
        assert read.attributes["vibe.db.outcome"] == "ended" and read.status != 2
        statements = _under(spans, read)
        assert len(statements) == read.attributes["vibe.db.statements"] >= 1
        assert {s.attributes["db.operation.name"] for s in statements} == {"SELECT"}

    # A tool call's write: committed, every statement a span named by its operation and table.
    [sent] = receiver.named("tools/call send_message")
    [write] = [s for s in _under(spans, sent) if s.name == "db.transaction write"]
    assert write.attributes["db.system.name"] == system
    assert write.attributes["vibe.db.outcome"] == "committed" and write.status != 2
    statements = _under(spans, write)
    # PostgreSQL: the message, its recipients and its event are one statement (store/messages.insert),
    # after the agents' read; SQLite: the message, its recipients, then its event
    assert len(statements) == write.attributes["vibe.db.statements"] >= (2 if system == "postgresql" else 3)
    for s in statements:
        assert s.kind == 3 and s.attributes["db.system.name"] == system
        assert s.name == " ".join(
            str(s.attributes[k]) for k in ("db.operation.name", "db.collection.name") if k in s.attributes
        )
        # never the SQL, a parameter or a row value
        assert not {k for k in s.attributes if k in ("db.query.text", "db.query.parameter")}
    names = {s.name for s in statements}
    if system == "postgresql":
        assert "INSERT messages" in names and "INSERT events" not in names, names
    else:
        assert {"INSERT messages", "INSERT events"} <= names, names
    [created] = receiver.named("tools/call create_issue")
    [write] = [s for s in _under(spans, created) if s.name == "db.transaction write"]
    assert "INSERT issues" in {s.name for s in _under(spans, write)}

    # A refusal inside the transaction: rolled back, with the error's class (never its text).
    [refused] = receiver.named("tools/call claim_issue")
    [rolled] = [s for s in _under(spans, refused) if s.name == "db.transaction write"]
    assert rolled.attributes["vibe.db.outcome"] == "rolled_back", rolled
    assert rolled.attributes["error.type"] == "NotFound" and rolled.status == 2

    # Background duties' transactions belong to no request: no trace of their own.
    assert all(s.parent_id for s in spans if s.name.startswith("db.transaction"))
    exported = b"".join(receiver.bodies)
    assert SECRET_BODY.encode() not in exported and b"a task" not in exported


async def test_the_stdio_command_traces_its_tool_calls(tmp_path: Path, receiver: Receiver) -> None:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from tests.e2e.test_foundation_cli import CLI, cli

    db = f"sqlite+aiosqlite:///{tmp_path / 'stdio.db'}"
    cli("migrate", "--database-url", db)
    token = cli("token", "create", "--role", "admin", "--database-url", db).stdout.strip()
    env = {**__import__("os").environ, "VIBE_TOKEN": token, "VIBE_OTEL_ENDPOINT": receiver.url}
    params = StdioServerParameters(command=CLI, args=["mcp", "--database-url", db], env=env, cwd=tmp_path)
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await call(client, "register_agent", name="local")
            await call(client, "create_issue", title="from stdio", agent="local")
    # the process has ended, and sent its spans before it did
    with receiver.lock:
        spans = list(receiver.spans)
    [created] = [s for s in spans if s.name == "tools/call create_issue"]
    assert created.parent_id == "" and created.attributes["vibe.outcome"] == "ok"
    [write] = [s for s in _under(spans, created) if s.name == "db.transaction write"]
    assert write.attributes["vibe.db.outcome"] == "committed"
    assert "INSERT issues" in {s.name for s in _under(spans, write)}
    # The call's log line (stderr) carries the span's trace id.
    logged = (tmp_path / "stderr.log").read_text()
    [line] = [x for x in logged.splitlines() if "event=tool_call" in x and "tool=create_issue" in x]
    assert f"trace_id={created.trace_id}" in line, logged


def test_off_without_an_endpoint_nothing_is_loaded(tmp_path: Path) -> None:
    """No endpoint: the app is built without the tracing middleware and the SDK is never imported."""
    script = """
import asyncio, sys
from vibe_ensemble.api.app import create_app
from vibe_ensemble.ops import tracing
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

async def main():
    settings = Settings(data_dir=sys.argv[1])
    runtime = Runtime(settings)
    await runtime.start(apply_migrations=True)
    tracer = tracing.start(settings)
    app = create_app(runtime, tracer=tracer)
    names = [m.cls.__name__ for m in app.user_middleware]
    await runtime.stop()
    print(tracer, runtime.db.tracer, "TracingMiddleware" in names, "opentelemetry.sdk" in sys.modules)

asyncio.run(main())
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("OTEL_", "VIBE_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "False", "False"]


def test_a_bad_endpoint_is_refused_at_start(tmp_path: Path) -> None:
    for name, value in (("VIBE_OTEL_ENDPOINT", "collector:4318"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")):
        env = {**__import__("os").environ, name: value, "VIBE_DATA_DIR": str(tmp_path)}
        done = run_cli(
            [sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate", "--port", "1"],
            env=env,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert "OTLP endpoint is an http:// or https:// URL" in done.stderr
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in done.stderr or "otel_endpoint" in done.stderr


def test_a_bad_endpoint_is_refused_by_the_stdio_command(tmp_path: Path) -> None:
    from tests.e2e.test_foundation_cli import CLI, cli

    db = f"sqlite+aiosqlite:///{tmp_path / 'stdio.db'}"
    cli("migrate", "--database-url", db)
    env = {**__import__("os").environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x", "VIBE_TOKEN": "unused"}
    done = run_cli([CLI, "mcp", "--database-url", db], env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in done.stderr and "http:// or https://" in done.stderr


def test_an_endpoint_without_the_packages_warns_and_stays_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    from vibe_ensemble.ops import tracing
    from vibe_ensemble.ops.config import Settings

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with capture_logs() as logs:
        assert tracing.start(Settings(data_dir=tmp_path, otel_endpoint="http://127.0.0.1:4318")) is None
    [warning] = logs
    assert warning["event"] == "tracing_off" and "vibe-ensemble[otel]" in warning["reason"]
