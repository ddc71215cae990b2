"""OpenTelemetry tracing, optional: a span per HTTP request, per MCP tool call, and per database
transaction and statement (store/traced.py), sent over OTLP/HTTP.

On only when both hold:

- the OpenTelemetry SDK and OTLP exporter are installed (`pip install 'vibe-ensemble[otel]'`);
- an endpoint is configured: `VIBE_OTEL_ENDPOINT`, else the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
  (a collector's base URL; spans go to `<url>/v1/traces`), and `OTEL_SDK_DISABLED` is not `true`.

Off, this module imports nothing of OpenTelemetry's SDK and the app installs no tracing middleware:
a request does no tracing work at all.

The spans are ours, from a tracer provider of our own (not the global one), so the libraries'
built-in instrumentation (FastAPI's, the MCP SDK's) stays the no-op it is without a provider, and
what leaves the process is exactly what is listed here: the HTTP method, the route template (never
the raw path or the query), the status, the request id, and who asked (agent, project, role,
credential id: never a token); for a tool call the tool's name, its outcome (`ok` or the error
code) and the agent and project; for a database transaction the system, its statement count and
outcome, for a statement its operation and table. Never a header, a body, a message, an argument's
text, SQL or a statement's values. An incoming W3C `traceparent` header makes the request's span
part of the caller's trace, and every log line written while a request is served carries its
`trace_id`. `vibe-ensemble serve` and the stdio `mcp` command start it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibe_ensemble import __version__
from vibe_ensemble.ops.config import Settings, otlp_url
from vibe_ensemble.ops.logging import LOG_FIELDS, PROBES, REQUEST_ID_HEADER, safe_name

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = structlog.get_logger(__name__)

TRACER_NAME = "vibe_ensemble"
_provider: TracerProvider | None = None


def endpoint(settings: Settings) -> str | None:
    """Where spans go (`…/v1/traces`), or None when no endpoint is configured or the SDK is disabled.

    Raises ValueError (naming the variable) when OTEL_EXPORTER_OTLP_ENDPOINT is not a URL.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    base = settings.otel_endpoint
    if base is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        try:
            base = otlp_url(os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
        except ValueError as exc:
            raise ValueError(f"OTEL_EXPORTER_OTLP_ENDPOINT: {exc}") from None
    return None if base is None else f"{base}/v1/traces"


def start(settings: Settings) -> Tracer | None:
    """Start exporting spans when tracing is configured and installed; the tracer, else None."""
    global _provider
    url = endpoint(settings)
    if url is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "tracing_off",
            reason="an OTLP endpoint is configured but the OpenTelemetry packages are not installed: "
            "pip install 'vibe-ensemble[otel]'",
        )
        return None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without a name, ours.
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": settings.server_name}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    # The exporter reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and _CERTIFICATE itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _provider = provider
    log.info("tracing_on", endpoint=url)
    return provider.get_tracer(TRACER_NAME, __version__)


def stop() -> None:
    """Send the spans still queued and stop the exporter (when tracing was started)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def _who(scope: Scope) -> dict[str, Any]:
    """The request's caller as the request's log line has it (ops/logging.note), as span attributes."""
    fields: Mapping[str, Any] = scope.get(LOG_FIELDS) or {}
    project = fields.get("project") or safe_name((scope.get("path_params") or {}).get("project"))
    who = {"project": project, **{k: fields.get(k) for k in ("agent", "role", "credential_id")}}
    return {f"vibe.{k}": v for k, v in who.items() if isinstance(v, str | int) and not isinstance(v, bool)}


class TracingMiddleware:
    """One SERVER span per HTTP request (not for the probes), installed only when tracing is on.

    It sits outside the request log middleware, so the request's log line carries the `trace_id`, and
    reads what that middleware learnt about the caller once the request is answered.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, StatusCode

        self.app = app
        self.tracer = tracer
        self._extract = propagate.extract
        self._server = SpanKind.SERVER
        self._error = StatusCode.ERROR

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PROBES:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        status = 500
        request_id = ""

        async def _send(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == REQUEST_ID_HEADER:
                        request_id = value.decode("latin-1")
            await send(message)

        # An exception's text may quote what a client sent: the span gets its class name only.
        with self.tracer.start_as_current_span(
            method,
            context=self._extract(carrier),
            kind=self._server,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            try:
                with structlog.contextvars.bound_contextvars(trace_id=trace_id):
                    await self.app(scope, receive, _send)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "http.route": route,
                        "http.response.status_code": status,
                        "vibe.request_id": request_id,
                        **_who(scope),
                    }
                )
                if status >= 500:
                    span.set_status(self._error, f"HTTP {status}")
