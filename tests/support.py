"""Helpers for tests: a real server process, MCP clients, waiting on conditions."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

# The first-start admin token: in the banner, or in the `admin_token_created` line (VIBE_LOG_JSON)
TOKEN_RE = re.compile(r'token(?::\s+|_secret":\s*")(vibe_[A-Za-z0-9_-]+)')

# CI sets this (.ci/run), having installed the tools: a test whose tool is missing fails there.
REQUIRE_TOOLS = os.environ.get("VIBE_REQUIRE_TOOLS") == "1"


def missing_tool(message: str) -> NoReturn:
    """A test's tool is not installed: skip, saying (`message`) how to install it; fail where the
    tools are required (VIBE_REQUIRE_TOOLS=1)."""
    if REQUIRE_TOOLS:
        pytest.fail(message)
    pytest.skip(message)


# Each xdist worker takes ports from its own block, below Linux's ephemeral range (32768+), so two
# workers never pick the same port between checking it and a server binding it.
PORTS_PER_WORKER = 500
_port_offset = random.randrange(PORTS_PER_WORKER)


def worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def free_port() -> int:
    """A loopback port free now, from this worker's block."""
    global _port_offset
    base = 20000 + (worker_index() % 24) * PORTS_PER_WORKER
    for _ in range(PORTS_PER_WORKER):
        _port_offset = (_port_offset + 1) % PORTS_PER_WORKER
        port = base + _port_offset
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {base}..{base + PORTS_PER_WORKER - 1}")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def moto_s3(log_dir: Path) -> Iterator[dict[str, str]]:
    """moto's standalone S3 server on loopback (its log in `log_dir`); yields the environment that
    points boto3 at it."""
    port = free_port()
    log = (log_dir / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "VIBE_BACKUP_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }

    def up() -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/", timeout=1).status_code < 500
        except httpx2.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, what="moto's S3 server")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str] | Forked
    url: str
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    admin_token: str = ""
    argv: list[str] = field(default_factory=list)

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.stop()
        fresh = launch(self.argv, self.env, self.log_path, self.url)
        self.proc = fresh.proc


class Forked:
    """A process the zygote (tests/zygote.py) forked for us, used as a `subprocess.Popen` is."""

    def __init__(self, pid: int, argv: list[str], exits: Path, zygote: subprocess.Popen[str]) -> None:
        self.pid = pid
        self.args = argv
        self.returncode: int | None = None
        self._exit = exits / str(pid)
        self._zygote = zygote

    def poll(self) -> int | None:
        if self.returncode is None and self._exit.exists():
            self.returncode = int(self._exit.read_text())
        elif self.returncode is None and self._zygote.poll() is not None and not self._exit.exists():
            # The zygote is gone, so no record will come: the process was reaped by init once it
            # ended, and is reported as killed (it is, if it still runs).
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Until the process has ended (or `timeout`). It is the zygote's child, not this process's,
        so it cannot be waited for: this blocks on pidfds of it and of the zygote (readable when either
        ends), then reads the exit record the zygote writes as soon as it has reaped it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = False
        with _pidfd(self.pid) as mine, _pidfd(self._zygote.pid) as zygote:
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                if ended or mine is None or zygote is None:
                    # ended: the record is moments away; no pidfd (gone already, or none on this
                    # system): looked for again shortly
                    time.sleep(0.001 if ended else 0.01)
                else:
                    ended = bool(select.select([mine, zygote], [], [], left)[0])
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    """A pidfd of process `pid`, readable once it has ended (Linux 5.3+); None where it is gone
    already or the system has none."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


class Zygote:
    """This test process's zygote: started on first use, ended with the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one request and its answer at a time on the pipes
        self.exits = Path(tempfile.mkdtemp(prefix="vibe-exits-"))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("zygote.py")), str(self.exits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(self.close)

    def fork(
        self, argv: list[str], env: dict[str, str], cwd: str, streams: Mapping[str, str | None]
    ) -> Forked:
        """`argv` forked with `env` in `cwd`, its `stdin`, `stdout` and `stderr` the files at those
        paths (no stdin: /dev/null)."""
        assert self.proc.stdin and self.proc.stdout
        request = {"argv": argv, "env": env, "cwd": cwd, **streams}
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        if not answer:
            raise OSError(f"the zygote ended with {self.proc.wait()}")
        return Forked(json.loads(answer)["pid"], argv, self.exits, self.proc)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.exits, ignore_errors=True)


_zygote: Zygote | None = None


CONSOLE_SCRIPT = str(Path(sys.executable).with_name("vibe-ensemble"))


def forkable(argv: list[str], env: dict[str, str]) -> list[str] | None:
    """`argv` as the zygote runs it (`[python, -m, vibe_ensemble.cli, …]` or `[python, SCRIPT, …]`),
    when it can start it as a fresh interpreter would, else None: a `vibe-ensemble` command (`python -m
    vibe_ensemble.cli` or the console script) with no interpreter options, not `serve --workers` (its
    metrics must be chosen before they are imported), with the same PYTHON… environment as this
    process."""
    if argv[:3] == [sys.executable, "-m", "vibe_ensemble.cli"]:
        line = argv
    elif argv[:1] == [CONSOLE_SCRIPT]:
        line = [sys.executable, *argv]
    else:
        return None
    python = {k: v for k, v in os.environ.items() if k.startswith("PYTHON")}
    same = {k: v for k, v in env.items() if k.startswith("PYTHON")} == python
    workers = any(arg.startswith("--workers") for arg in argv) or "PROMETHEUS_MULTIPROC_DIR" in env
    return line if same and not workers else None


def _fork(
    argv: list[str], env: dict[str, str], streams: Mapping[str, str | None], cwd: Path | str | None = None
) -> Forked | None:
    """`argv` forked by this process's zygote (started on first use), or None where it cannot be."""
    global _zygote
    line = forkable(argv, env)
    if line is None:
        return None
    try:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = Zygote()
        return _zygote.fork(line, env, str(cwd or os.getcwd()), streams)
    except OSError:
        return None  # no zygote: a fresh interpreter


def start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[str] | Forked:
    """`argv` as a process of its own writing to `log_path`: forked by the zygote where it can be
    (a second of CPU less), else a fresh interpreter."""
    forked = _fork(argv, env, {"stdout": str(log_path), "stderr": str(log_path)})
    if forked is not None:
        return forked
    with log_path.open("a") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def run_cli(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    input: str | None = None,
    cwd: Path | str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(argv, capture_output=True, text=True, …)` for a `vibe-ensemble` command: forked
    by the zygote where it can be (half a second of CPU less), else a fresh interpreter."""
    environment = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="vibe-cli-") as tmp:
        stdout, stderr, stdin = (Path(tmp) / name for name in ("stdout", "stderr", "stdin"))
        stdin.write_text(input or "")
        streams = {"stdin": str(stdin), "stdout": str(stdout), "stderr": str(stderr)}
        forked = _fork(argv, environment, streams, cwd)
        if forked is None:
            return subprocess.run(
                argv, env=environment, input=input, cwd=cwd, capture_output=True, text=True, timeout=timeout
            )
        try:
            code = forked.wait(timeout)
        except subprocess.TimeoutExpired:
            forked.kill()
            forked.wait()
            raise
        out, err = (path.read_text() if path.exists() else "" for path in (stdout, stderr))
        return subprocess.CompletedProcess(argv, code, out, err)


def launch(
    argv: list[str], env: dict[str, str], log_path: Path, url: str, ready_timeout: float = 90
) -> ServerProcess:
    proc = start(argv, env, log_path)
    server = ServerProcess(
        proc=proc, url=url, data_dir=Path(env.get("VIBE_DATA_DIR", "")), env=env, log_path=log_path, argv=argv
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            return probe.get(url + "/readyz").status_code == 200
        except httpx2.HTTPError:
            return False

    try:
        with httpx2.Client(timeout=5, verify=tls()) as probe:
            wait_until(ready, timeout=ready_timeout, what=f"server at {url} to be ready")
    except BaseException:
        server.kill()  # a server that never became ready is no fixture's to stop: do not leak it
        raise
    return server


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for the tests' HTTP clients. httpx builds one for every client it makes (an
    `httpx2.get` too), loading the CA bundle: about 10 ms of CPU each, and every server here is
    plain HTTP on loopback."""
    return ssl.create_default_context()


def serving(tmp_path: Path, **options: Any) -> Iterator[ServerProcess]:
    """A server for a fixture (`yield from serving(...)`): started, handed out, stopped afterwards."""
    server = start_server(tmp_path, **options)
    try:
        yield server
    finally:
        server.stop()


def serve_refused(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`serve ARGS` with its data in `data_dir`, expected to refuse to start (it would serve
    otherwise: the timeout). `env` adds or overrides environment variables."""
    environment = {**os.environ, "VIBE_DATA_DIR": str(data_dir), "VIBE_PORT": str(free_port()), **env}
    return run_cli([sys.executable, "-m", "vibe_ensemble.cli", "serve", *args], env=environment)


def start_server(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    extra_args: list[str] | None = None,
    ready_timeout: float = 90,
) -> ServerProcess:
    """Start `vibe-ensemble serve --migrate` and capture the first-start admin token."""
    port = port or free_port()
    data_dir = tmp_path / f"data-{port}"
    env = {**os.environ, "VIBE_DATA_DIR": str(data_dir), "VIBE_PORT": str(port), "VIBE_HOST": "127.0.0.1"}
    if database_url:
        env["VIBE_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate", *(extra_args or [])]
    log_path = tmp_path / f"server-{port}.log"
    server = launch(argv, env, log_path, f"http://127.0.0.1:{port}", ready_timeout)
    match = TOKEN_RE.search(server.log())
    if match:
        server.admin_token = match.group(1)
    return server


@asynccontextmanager
async def mcp_client(url: str, token: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The official SDK client over Streamable HTTP with a bearer token."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=tls())
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client


def mcp_error(exc: BaseException) -> MCPError:
    """The MCPError in `exc`, or in the exception groups around it (the SDK's task group wraps it)."""
    if isinstance(exc, MCPError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        with contextlib.suppress(LookupError):
            return mcp_error(inner)
    raise LookupError(f"no MCPError in {exc!r}")


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call a tool and return its structured result; raise AssertionError on a tool error."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise AssertionError(f"{tool} failed: {result.content[0].text if result.content else result}")
    content = result.structured_content
    if isinstance(content, dict) and set(content) == {"result"}:
        return content["result"]
    return content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return its error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    return str(result.content[0].text)  # type: ignore[union-attr]


# the `initialize` params of a client that writes its requests down a pipe (the older protocol)
PIPE_HELLO = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "pipe", "version": "1"},
}

UNREADABLE = [  # lines the SDK's stdio transport cannot read as a JSON-RPC message, and a good one
    '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":"x"}',
    '{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"list_agents","arguments":{"role":"\\ud800"}}}',
    "not json",
    "",
    '{"jsonrpc":"2.0","id":true,"method":"ping"}',  # (read as a notification, which is not answered)
    '[{"jsonrpc":"2.0","id":7,"method":"ping"}]',  # a batch, which /mcp refuses too
    '{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"list_agents","arguments":{}}}',
]


def check_unreadable_answered(stdout: str) -> None:
    """Each line of `UNREADABLE` but the blank one answered: the request's id when it can be read, the
    rule it broke (they went unanswered: a client waited for ever)."""
    answers = [json.loads(line) for line in stdout.splitlines()]
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    assert sorted(by_id) == [1, 5, 6, 8], answers
    unread, bad_id, batch = [a["error"] for a in answers if a["id"] is None]  # (in the lines' order)
    assert unread["code"] == -32700
    # Every -32600 is said as /mcp says it: `[invalid_request] rule`, data {code, field, rule}.
    assert bad_id["code"] == -32600 and bad_id["data"]["field"] == "id"
    assert bad_id["message"].startswith("[invalid_request] a request's id must be a string or an integer")
    for refused in (by_id[5]["error"], batch):
        assert refused["code"] == -32600 and refused["data"]["code"] == "invalid_request", refused
        assert refused["message"].startswith("[invalid_request] each line must be one JSON-RPC 2.0 message")
    assert "a batch (an array) is not accepted" in batch["message"]
    assert by_id[6]["error"] == {
        "code": -32600,
        "message": "[invalid_request] text must be valid Unicode (no lone surrogates such as \\ud800)",
        "data": {
            "code": "invalid_request",
            "field": "line",
            "rule": "text must be valid Unicode (no lone surrogates such as \\ud800)",
        },
    }
    assert "result" in by_id[8]
