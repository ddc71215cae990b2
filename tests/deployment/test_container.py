"""The production image, built and run for real with podman, as Kubernetes runs it.

Built by deployment/scripts/build-secure.sh (hadolint, the build, the SBOM, the scan step), then run
with a read-only root filesystem, as UID 1001, with every capability dropped and no new privileges.
Checked from outside: /healthz, /readyz, an MCP tool call with the official SDK client, the live feed
told to reconnect on SIGTERM, and a clean exit well inside the stop timeout.

Skips, saying why, where podman or the local base image is missing (CI sets VIBE_REQUIRE_CONTAINER=1
after preparing them, and then it fails instead).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tests.support import TOKEN_RE, call, free_port, mcp_client, wait_until

from .support import ROOT, SCRIPTS

pytestmark = pytest.mark.container

BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = os.environ.get("VIBE_CONTAINER_IMAGE", "localhost/vibe-ensemble:test")
REQUIRE = os.environ.get("VIBE_REQUIRE_CONTAINER") == "1"
METRICS_TOKEN = secrets.token_urlsafe(48)  # the container scrapes /metrics with it


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def _unavailable() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (../shared/tools/container-env installs it)"
    if podman("image", "exists", BASE, check=False).returncode != 0:
        return f"the base image {BASE} is not available locally (../shared/tools/container-env makes it)"
    return None


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    reason = _unavailable()
    if reason:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    if os.environ.get("VIBE_CONTAINER_IMAGE"):
        return IMAGE  # built by the caller (ci.yml builds it with build-secure.sh first)
    out = tmp_path_factory.mktemp("build")
    result = subprocess.run(
        [str(SCRIPTS / "build-secure.sh"), IMAGE],
        env={**os.environ, "ENGINE": "podman", "BUILD_ARGS": "--network=host", "OUT_DIR": str(out)},
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    print(result.stdout[-1500:])
    assert "hadolint: clean" in result.stdout
    sbom = json.loads(next(out.glob("*.cdx.json")).read_text())
    names = {c["name"] for c in sbom["components"]}
    assert {"mcp", "fastapi", "uvicorn", "sqlalchemy"} <= {n.lower() for n in names}
    scanned = shutil.which("trivy") or shutil.which("grype")
    assert scanned or "skipped: neither trivy nor grype is on PATH" in result.stdout
    return IMAGE


def inspect(image: str) -> dict[str, object]:
    data = json.loads(podman("image", "inspect", image).stdout)[0]
    assert isinstance(data, dict)
    return data


@pytest.mark.timeout(1800)
def test_image_metadata(image: str) -> None:
    data = inspect(image)
    config = data["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "1001:1001"
    assert config["Entrypoint"][:3] == ["/usr/bin/tini", "-e", "143"]
    labels = config["Labels"]
    for key in ("title", "version", "revision", "created", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    if not os.environ.get("VIBE_CONTAINER_IMAGE"):  # built here, from this checkout, just now
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        assert labels["org.opencontainers.image.revision"] == head.stdout.strip()
        created = datetime.fromisoformat(labels["org.opencontainers.image.created"])
        assert datetime.now(UTC) - created < timedelta(hours=1), created  # not an earlier build's
    healthcheck = data.get("Healthcheck") or config.get("Healthcheck") or {}
    assert isinstance(healthcheck, dict)
    assert "/healthz" in " ".join(healthcheck.get("Test", [])), "no HEALTHCHECK (build with --format docker)"
    size = data["Size"]
    assert isinstance(size, int)
    print(f"image size: {size / 1e6:.0f} MB")


@pytest.mark.timeout(1800)
def test_image_contents(image: str) -> None:
    """No compilers, no pip, no package manager, no bytecode caches in the image."""
    script = (
        "for c in gcc cc g++ make pip pip3 apt apt-get dpkg; do command -v $c && echo FOUND $c; done; "
        "find / -xdev \\( -name __pycache__ -o -name '*.pyc' \\) -print -quit | sed 's/^/FOUND /'; "
        "ls /root/.cache/pip 2>/dev/null | sed 's/^/FOUND pip cache /'; echo done"
    )
    result = podman("run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c", script)
    assert result.stdout.strip().endswith("done"), result.stdout + result.stderr
    assert "FOUND" not in result.stdout, result.stdout


class Container:
    def __init__(self, name: str, port: int) -> None:
        self.name, self.port, self.url = name, port, f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict[str, object]:
        data = json.loads(podman("inspect", self.name).stdout)[0]["State"]
        assert isinstance(data, dict)
        return data


@pytest.fixture
def container(image: str) -> Iterator[Container]:
    port = free_port()
    name = f"vibe-test-{port}"
    volume = f"vibe-test-data-{port}"
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--user",
        "1001:1001",
        "-v",
        f"{volume}:/data",
        "-e",
        f"VIBE_PORT={port}",
        "-e",
        f'VIBE_ALLOWED_HOSTS=["127.0.0.1:{port}"]',
        "-e",
        f"VIBE_REQUEST_STATE_KEY={secrets.token_urlsafe(48)}",
        "-e",
        f"VIBE_SESSION_SECRET={secrets.token_urlsafe(48)}",
        "-e",
        f"VIBE_METRICS_TOKEN={METRICS_TOKEN}",
        image,
        "serve",
        "--migrate",
    )
    box = Container(name, port)
    try:
        yield box
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def ready(box: Container) -> bool:
    if box.state().get("Status") == "exited":
        raise AssertionError(f"container exited:\n{box.logs()}")
    try:
        return httpx2.get(box.url + "/readyz", timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False


@pytest.mark.timeout(1800)
async def test_runs_locked_down_and_stops_gracefully(container: Container) -> None:
    # start-up compiles every module (no bytecode caches in the image): allow for a loaded machine
    wait_until(lambda: ready(container), timeout=180, what="the container to be ready")
    assert httpx2.get(container.url + "/healthz").json() == {"status": "ok"}
    assert httpx2.get(container.url + "/readyz").json()["status"] == "ready"

    # as UID 1001, no capabilities, read-only root
    status = podman("exec", container.name, "cat", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status
    ids = podman("exec", container.name, "id", "-u").stdout.strip()
    assert ids == "1001"
    write = podman("exec", container.name, "touch", "/opt/venv/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr

    # an MCP tool call with the official SDK client, with the first-start admin token
    match = TOKEN_RE.search(container.logs())
    assert match, container.logs()
    token = match.group(1)
    async with mcp_client(container.url + "/mcp", token) as client:
        assert (await call(client, "list_issues"))["items"] == []
        created = await call(client, "create_issue", title="from the container test")
        assert created["title"] == "from the container test"

    # the deployment smoke test passes against the container
    smoke = subprocess.run(
        [str(SCRIPTS / "validate-deployment.sh"), container.url],
        env={**os.environ, "VIBE_TOKEN": token, "VIBE_METRICS_TOKEN": METRICS_TOKEN, "SAMPLES": "10"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(smoke.stdout)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr

    # graceful stop: an open live feed is told to reconnect, and the process exits 0 (tini maps
    # uvicorn's re-raised SIGTERM to 0); podman's SIGKILL after 30 s would show as 137
    with httpx2.stream(
        "GET",
        container.url + "/api/v1/events/stream",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        stop = subprocess.Popen(["podman", "stop", "-t", "30", container.name], stdout=subprocess.DEVNULL)
        rest = "\n".join(lines)
    assert "shutting down" in rest, rest
    assert stop.wait(timeout=60) == 0
    state = container.state()
    assert state["ExitCode"] == 0, container.logs()
