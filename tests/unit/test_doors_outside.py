"""The app's two doors (api/app.py): which requests `LiveSocketDoor` and `McpDoor` take aside, and
that the layers that act on those requests stay on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from vibe_ensemble.api.app import LiveSocketDoor, McpDoor, NamedRoute, create_app
from vibe_ensemble.api.feeds import SocketRoute
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime


class Inner:
    """The rest of the app: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append((scope["type"], scope["path"]))


def _scope(kind: str, path: str, host: str) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "scheme": "ws" if kind == "websocket" else "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
    }
    if kind == "http":
        scope["method"] = "GET"
    return scope


async def _run(door: LiveSocketDoor, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await door(scope, receive, send)
    return sent


async def test_only_the_feeds_websocket_is_taken_aside(tmp_path: Path) -> None:
    inner = Inner()
    door = LiveSocketDoor(inner, SocketRoute(), Settings(data_dir=tmp_path))
    for kind, path in [
        ("http", "/api/v1/events/ws"),  # the path, but not a WebSocket
        ("websocket", "/api/v1/events/wsx"),  # a WebSocket, but another path
        ("websocket", "/mcp"),
        ("http", "/healthz"),
    ]:
        await _run(door, _scope(kind, path, "127.0.0.1:8080"))
    await _run(door, {"type": "lifespan"} | {"path": ""})
    assert inner.paths == [
        ("http", "/api/v1/events/ws"),
        ("websocket", "/api/v1/events/wsx"),
        ("websocket", "/mcp"),
        ("http", "/healthz"),
        ("lifespan", ""),
    ]


async def test_the_feeds_websocket_still_meets_the_host_check(tmp_path: Path) -> None:
    inner = Inner()
    settings = Settings(data_dir=tmp_path, allowed_hosts=["vibe.example.com"])
    door = LiveSocketDoor(inner, SocketRoute(), settings)
    scope = _scope("websocket", "/api/v1/events/ws", "evil.example.net")
    sent = await _run(door, scope)
    assert inner.paths == []  # taken aside, and refused there: never accepted
    assert sent == [
        {"type": "websocket.close", "code": 1008, "reason": "Host is not one of VIBE_ALLOWED_HOSTS"}
    ]
    assert scope["route"].path == "/api/v1/events/ws"  # the log line names the route


def test_the_door_is_outside_every_layer_fastapis_own_included(tmp_path: Path) -> None:
    """A feed's socket keeps a frame of every layer it passes for as long as it is open: the door
    comes before FastAPI's own (server error, exception telemetry, body limit), not inside them."""
    app = create_app(Runtime(Settings(data_dir=tmp_path)))
    stack = app.build_middleware_stack()
    assert isinstance(stack, LiveSocketDoor)
    assert isinstance(stack.app, McpDoor)
    assert type(stack.app.app).__name__ == "ServerErrorMiddleware"  # FastAPI's outermost, then the rest


def _layers(app: Any) -> list[str]:
    """The classes of a chain of ASGI layers, outermost first, down to the first that has no `app`."""
    names = []
    while app is not None:
        names.append(type(app).__name__)
        app = getattr(app, "app", None)
    return names


def test_a_tool_call_passes_the_apps_own_layers_in_their_order(tmp_path: Path) -> None:
    """POST /mcp skips FastAPI's inner layers and router, never a layer `add_middleware` installed:
    its chain is Starlette's last-resort 500, then the app's own layers as the full stack has them."""
    settings = Settings(data_dir=tmp_path, cors_origins=["https://ui.example.com"])
    app = create_app(Runtime(settings))
    door = app.build_middleware_stack().app
    assert isinstance(door, McpDoor)
    full = _layers(door.app)
    ours = [m.cls.__name__ for m in app.user_middleware]  # type: ignore[attr-defined]
    fastapis = ["ServerErrorMiddleware", "ExceptionTelemetryMiddleware", "AppBodyLimitMiddleware"]
    assert full[: len(ours) + 3] == [*fastapis, *ours]
    assert _layers(door.door)[:-1] == ["ServerErrorMiddleware", *ours]
    assert "CORSMiddleware" in ours and "HostGuard" in ours and "RequestLogMiddleware" in ours


async def test_only_a_post_to_mcp_is_taken_aside(tmp_path: Path) -> None:
    inner, served = Inner(), Inner()
    route = NamedRoute("/mcp", served, methods=["GET", "POST", "DELETE"])
    door = McpDoor(inner, route, [], debug=False)
    for method, path in [
        ("GET", "/mcp"),  # the path, another method (a stream, or 405): the app's usual way
        ("DELETE", "/mcp"),
        ("POST", "/mcp/"),
        ("POST", "/mcpx"),
        ("POST", "/api/v1/messages"),
    ]:
        await _run(door, _scope("http", path, "127.0.0.1:8080") | {"method": method})
    await _run(door, _scope("websocket", "/mcp", "127.0.0.1:8080"))
    assert inner.paths == [
        ("http", "/mcp"),
        ("http", "/mcp"),
        ("http", "/mcp/"),
        ("http", "/mcpx"),
        ("http", "/api/v1/messages"),
        ("websocket", "/mcp"),
    ]
    scope = _scope("http", "/mcp", "127.0.0.1:8080") | {"method": "POST"}
    await _run(door, scope)
    assert served.paths == [("http", "/mcp")]
    assert scope["route"] is route  # the log line and the metrics name the route


async def test_fastapis_own_telemetry_stays_off_under_a_global_tracer_provider(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A process with a global tracer provider (run under `opentelemetry-instrument`, say) gets no
    second span per request from FastAPI's native telemetry, nor its exception logs (they carry
    request bodies): tracing is ours (ops/tracing.py), on when its settings say so."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    app = create_app(Runtime(Settings(data_dir=tmp_path)))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = _scope("http", "/healthz", "127.0.0.1:8080") | {"http_version": "1.1", "asgi": {"version": "3.0"}}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    provider.force_flush()
    assert exported.get_finished_spans() == ()
