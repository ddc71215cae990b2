"""One `Settings` object: environment (`VIBE_…`), an optional TOML file, and profiles."""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vibe_ensemble.domain.rules import PG_TOOL_TIMEOUT_S
from vibe_ensemble.ops.startup import default_data_dir

Profile = Literal["development", "staging", "production"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_STATE_KEY = "development-only-request-state-key-change-me"
DEFAULT_RATE_LIMITS = {"admin": 6000, "coordinator": 6000, "worker": 3000, "viewer": 1200}


def otlp_url(value: str) -> str:
    """An OTLP/HTTP endpoint: an absolute http(s) URL with a host (ValueError naming the rule)."""
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an OTLP endpoint is an http:// or https:// URL with a host, not {url[:80]!r}")
    return url.rstrip("/")


def connect_host(host: str) -> str:
    """The host a client connects to, as a URL writes it, for a server listening on `host`: loopback
    for every address (0.0.0.0, ::, or none), an IPv6 address in brackets, a name as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{address}]" if address.version == 6 else str(address)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIBE_", extra="forbid")

    profile: Profile = "development"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # liveness on a port of its own, answered beside the event loop (ops/health.py, docs/operations.md):
    # /healthz there says 503 once the loop has not run for health_stall_s
    health_port: int | None = Field(None, ge=1, le=65535)
    health_stall_s: float = Field(10.0, gt=0, le=600)
    # where the SQLite file lives: the platform's per-user data directory (ops/startup.py)
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    # SQLite durability (docs/operations.md): FULL syncs every commit to disk before it is acknowledged;
    # NORMAL is faster but a power loss (not a process crash) may roll back the last commits
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # PostgreSQL: the connections one server process may open (each `--workers` worker has its own);
    # more than the database has cores for makes commits queue (docs/deployment/production-operations.md)
    db_pool_size: int = Field(20, ge=1, le=500)
    # backups (docs/backups.md): where `backup create` writes and the other commands read (a directory
    # or s3://bucket/prefix; default <data_dir>/backups), an S3 endpoint for S3-compatible stores,
    # where pg_dump/pg_restore live when they are not on PATH, and how long one run of them may take
    # (then it is killed and the command fails: a hung PostgreSQL made `backup create` wait forever)
    backup_location: str | None = None
    backup_s3_endpoint_url: str | None = None
    pg_bin_dir: Path | None = None
    pg_tool_timeout_s: float = Field(PG_TOOL_TIMEOUT_S, gt=0)
    default_project: str = "default"
    public_url: str | None = None  # how clients reach us, for printed config snippets
    server_name: str = "vibe-ensemble"
    request_state_key: str = DEFAULT_STATE_KEY
    tool_profile: Literal["core", "full"] = "core"
    replicas: int = Field(1, ge=1)
    log_level: str = "info"
    log_json: bool = False
    # OpenTelemetry tracing (docs/operations.md#tracing): the OTLP/HTTP collector's base URL, spans
    # go to <url>/v1/traces; unset: OTEL_EXPORTER_OTLP_ENDPOINT, and neither: tracing is off
    otel_endpoint: str | None = None
    # presence: agents go offline after this many seconds without a call (a heartbeat or any other
    # call acting as them; services/base.Presence), and are retired after this many seconds of silence
    offline_after_s: float = Field(120, gt=0)
    retire_after_s: int = Field(7 * 24 * 3600, ge=60)
    sweep_interval_s: float = Field(10.0, gt=0)
    # the dashboard's "Needs attention" (docs/dashboard.md#needs-attention): mail asking for an
    # acknowledgement is overdue after this long, a lease this close to expiry under active work is
    # flagged, and refused leases and commits are shown for this long
    attention_ack_after_s: float = Field(600, gt=0)
    attention_lease_warning_s: float = Field(300, gt=0)
    attention_conflict_window_s: float = Field(1800, gt=0)
    # replicas (PostgreSQL): a process that does not run the duties tries to take them over this often
    leader_retry_s: float = Field(5.0, gt=0)
    # live feed (docs/live.md): keep-alive interval, and how long a client may take to accept the
    # next chunk before it counts as fallen behind and is disconnected
    feed_keepalive_s: float = Field(15.0, gt=0, le=300)
    feed_send_timeout_s: float = Field(10.0, gt=0)
    # per credential, at once (docs/security.md#limits): open SSE/WebSocket feeds, and held
    # wait_for_messages calls (MCP and REST); beyond: 429, a WebSocket close 1008, a tool error
    max_feeds_per_credential: int = Field(16, ge=1, le=10_000)
    max_waits_per_credential: int = Field(32, ge=1, le=10_000)
    # on SIGTERM: open event streams end at once; other requests get this long to finish
    shutdown_grace_s: int = Field(5, ge=0)
    # on SIGTERM, first: /readyz answers 503 and every answer says `Connection: close` for this long,
    # so load balancers and keep-alive clients move away before the listener closes (docs/operations.md)
    shutdown_drain_s: float = Field(2.0, ge=0, le=120)
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    # security (docs/security.md): requests per minute per token role (0: unlimited), the bucket size,
    # and the same for failed authentications per client address
    rate_limit_per_minute: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    rate_limit_burst: int = Field(300, ge=1)
    auth_failures_per_minute: int = Field(30, ge=0)
    # a verified token is trusted this long without reading it again (0: read it on every request);
    # revoking takes effect at once on the replica that revokes, within this bound on the others
    credential_cache_s: float = Field(5.0, ge=0, le=60)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # a request's body must arrive whole within this, from when the server first reads it, else 408
    body_timeout_s: float = Field(30.0, gt=0)
    # a request's line and headers must arrive whole within this (from the connection's start, then
    # from each later request's first byte); past it 408 and the connection is closed
    head_timeout_s: float = Field(30.0, gt=0, le=3600)
    # how long an idle keep-alive connection stays open between requests. Above the idle timeout of
    # whatever proxies to the server (ingress-nginx and AWS load balancers: 60 s): a server closing
    # first races the proxy's next request on that connection, which the proxy answers 502
    # (docs/deployment/production-operations.md)
    keep_alive_s: int = Field(75, ge=1, le=3600)
    cors_origins: list[str] = Field(default_factory=list)  # CORS is off unless origins are listed
    # X-Forwarded-For/-Proto are honoured only from these addresses (none by default: behind a
    # reverse proxy, list its address)
    trusted_proxies: list[str] = Field(default_factory=list)
    limit_concurrency: int | None = Field(None, ge=1)  # uvicorn: answer 503 beyond this many connections
    # requests (MCP calls, REST) a server process works on at once; the others queue, first come first
    # served, so the event loop's turns stay short (api/gate.py, docs/performance.md#calls-at-once).
    # Unset: 4 on SQLite (a call's work is on the loop), db_pool_size on PostgreSQL (a call waits on
    # its round trips)
    max_calls_at_once: int | None = Field(None, ge=1, le=10_000)
    # dashboard sessions (docs/dashboard.md): the HMAC key that signs session cookies and CSRF tokens
    # (empty: a random key per process, so sessions end at a restart), and how long a session lasts
    session_secret: str = ""
    session_ttl_s: int = Field(12 * 3600, ge=60, le=30 * 24 * 3600)
    # /metrics (docs/operations.md#metrics): set, it answers only `Authorization: Bearer <this>`,
    # whatever the Host; empty, it answers only on a loopback-only server (api/metrics.py)
    metrics_token: str = ""

    @field_validator("database_url")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if v else None

    @field_validator("metrics_token")
    @classmethod
    def _strip_secret(cls, v: str) -> str:
        return v.strip()  # a token read from a file often ends in a newline; Prometheus strips it too

    @field_validator("otel_endpoint")
    @classmethod
    def _otlp_url(cls, v: str | None) -> str | None:
        return otlp_url(v) if v and v.strip() else None

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("rate_limit_per_minute")
    @classmethod
    def _rate_limits(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = set(v) - set(DEFAULT_RATE_LIMITS)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}: use {', '.join(DEFAULT_RATE_LIMITS)}")
        if any(n < 0 for n in v.values()):
            raise ValueError("a rate limit is a number of requests per minute, 0 or more (0: unlimited)")
        return {**DEFAULT_RATE_LIMITS, **v}

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'vibe.db'}"

    @property
    def effective_backup_location(self) -> str:
        return self.backup_location or str(self.data_dir / "backups")

    @property
    def mcp_url(self) -> str:
        """The MCP URL a client reaches the server at (the start banner, `connect`'s default, the owner
        lock of a SQLite file): `public_url`'s when set (a proxy in front, a path of its own), else the
        listening address's, every address (0.0.0.0, ::) as loopback, IPv6 bracketed."""
        base = self.public_url or f"http://{connect_host(self.host)}:{self.port}"
        return base.rstrip("/") + "/mcp"

    @property
    def loopback_only(self) -> bool:
        """Listening on loopback and answering loopback names only (no VIBE_ALLOWED_HOSTS): a
        developer's machine, where /metrics may answer without VIBE_METRICS_TOKEN."""
        return self.host in LOOPBACK and not self.allowed_hosts

    def unsafe_reasons(self) -> list[str]:
        """What makes these settings unfit for production (an empty list when they are fine)."""
        reasons = []
        if self.request_state_key == DEFAULT_STATE_KEY or len(self.request_state_key) < 32:
            reasons.append(
                "VIBE_REQUEST_STATE_KEY is the default or shorter than 32 characters: set a random secret"
            )
        elif not looks_random(self.request_state_key):
            reasons.append(f"VIBE_REQUEST_STATE_KEY {GUESSABLE}")
        if len(self.session_secret) < 32:
            reasons.append("VIBE_SESSION_SECRET is unset or shorter than 32 characters: set a random secret")
        elif not looks_random(self.session_secret):
            reasons.append(f"VIBE_SESSION_SECRET {GUESSABLE}")
        if len(self.metrics_token) < 32:
            reasons.append(
                "VIBE_METRICS_TOKEN is unset or shorter than 32 characters: set a random secret and give "
                "it to Prometheus as its bearer token (docs/operations.md#metrics)"
            )
        elif not looks_random(self.metrics_token):
            reasons.append(f"VIBE_METRICS_TOKEN {GUESSABLE}")
        named = [
            ("VIBE_REQUEST_STATE_KEY", self.request_state_key),
            ("VIBE_SESSION_SECRET", self.session_secret),
            ("VIBE_METRICS_TOKEN", self.metrics_token),
        ]
        for name, value in named:
            if PLACEHOLDER in value.upper():
                reasons.append(
                    f"{name} is the placeholder of deployment/k8s/secret-template.yaml: {GENERATE}"
                )
        for (first, value), (second, same) in itertools.combinations(named, 2):
            if value and value == same:
                reasons.append(
                    f"{second} is the same as {first}: give each its own random secret (Prometheus holds the "
                    f"metrics token; the others sign sessions and request state), e.g. {GENERATE}"
                )
        if self.effective_database_url.startswith("sqlite") and self.replicas > 1:
            reasons.append("SQLite cannot serve several replicas: set VIBE_DATABASE_URL to PostgreSQL")
        return reasons


# The least character entropy a secret must show. The measure (Shannon's, from the secret's own
# character counts) runs low on short strings: a 32-character hex secret carries 128 random bits
# but measures 90-127, and a 32-character token_urlsafe one 124-160 (200,000 of each, drawn). So
# the floor sits below those, where only strings of few different characters fall (32 x `a`: 0,
# `ab` x 16: 32); the other two tests catch the typed strings that vary more.
MIN_CHARACTER_BITS = 80
GENERATE = (
    'set a random secret, e.g. `openssl rand -hex 32` or `python -c "import secrets; '
    'print(secrets.token_urlsafe(32))"`'
)
GUESSABLE = f"looks guessable (too few different characters, a repeated part, or a run like abcd): {GENERATE}"
PLACEHOLDER = "REPLACE-WITH"  # what deployment/k8s/secret-template.yaml holds until someone fills it in


def looks_random(secret: str) -> bool:
    """A cheap test that `secret` was generated, not typed: its characters carry at least
    MIN_CHARACTER_BITS of (Shannon) entropy, it is not a shorter string repeated, and at most three
    quarters of the neighbouring pairs are repeats or steps (`aa`, `ab`, `ba`; about one pair in six
    of a hex secret is one, and more than half of them in about one draw in 300,000, so the line is
    not at half). Generated secrets of 128 random bits or more pass (`openssl rand -hex 16` and up,
    `secrets.token_urlsafe(24)` and up); `aaaa…`, `abcdabcd…`, `abcdef…` and `password` * 4 do not.
    It cannot prove randomness: generate secrets, never type them."""
    counts = Counter(secret)
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    steps = sum(1 for a, b in itertools.pairwise(secret) if abs(ord(a) - ord(b)) <= 1)
    repeated = secret in (secret + secret)[1:-1]
    return per_char * len(secret) >= MIN_CHARACTER_BITS and not repeated and steps * 4 <= len(secret) * 3


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from (lowest first) the TOML file, the environment, then explicit overrides."""
    path = config_file or (Path(os.environ["VIBE_CONFIG"]) if os.environ.get("VIBE_CONFIG") else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as fh:
            file_values = tomllib.load(fh)
    if "VIBE_AUTH_ENABLED" in os.environ:
        raise ValueError("VIBE_AUTH_ENABLED is not a setting: authentication is always on; unset it")
    env_values = Settings().model_dump(exclude_unset=True)
    merged = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**merged)
