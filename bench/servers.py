"""Servers for the benchmarks: `vibe-ensemble serve --migrate` processes on free loopback ports.

A server started here has rate limits switched off, so figures measure the server, not the limiter.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

TOKEN_RE = re.compile(r"token:\s+(vibe_[A-Za-z0-9_-]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Servers:
    urls: list[str]
    token: str  # the first-start admin token
    pids: list[int]


@contextmanager
def own_servers(
    database_url: str | None,
    replicas: int,
    extra_args: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Servers]:
    """Start `replicas` servers on one database; yield their URLs, pids and the first-start admin token."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vibe-bench-") as tmp:
        try:
            for i in range(replicas):
                port = free_port()
                env = {
                    **os.environ,
                    "VIBE_DATA_DIR": tmp,
                    "VIBE_PORT": str(port),
                    "VIBE_HOST": "127.0.0.1",
                    # every role unlimited: the swarms' agents have worker tokens
                    "VIBE_RATE_LIMIT_PER_MINUTE": json.dumps(
                        {"admin": 0, "coordinator": 0, "worker": 0, "viewer": 0}
                    ),
                    # the benches follow many feeds with the one admin token
                    "VIBE_MAX_FEEDS_PER_CREDENTIAL": "10000",
                    **(extra_env or {}),
                }
                argv = [sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate"]
                if database_url:
                    argv += ["--database-url", database_url]
                argv += list(extra_args)
                log_path = Path(tmp) / f"server-{i}.log"
                with log_path.open("w") as log:
                    procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, procs[-1], log_path)
                urls.append(url)
            match = TOKEN_RE.search((Path(tmp) / "server-0.log").read_text())
            if match is None:
                raise SystemExit("the server printed no first-start admin token (is the database new?)")
            yield Servers(urls, match.group(1), [p.pid for p in procs])
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=15)


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    path: str = "/readyz",
    ok: Sequence[int] = (200,),
    method: str = "GET",
) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx2.request(method, url + path, timeout=1).status_code in ok:
                return
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server at {url} was not ready in 120 s:\n{log_path.read_text()}")
        time.sleep(0.05)
