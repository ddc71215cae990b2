"""docs/deployment/production-operations.md names only files, settings, alerts and commands that exist."""

from __future__ import annotations

import re

import yaml

from vibe_ensemble.cli import app
from vibe_ensemble.ops.config import Settings

from .support import ROOT, one

DOC = (ROOT / "docs" / "deployment" / "production-operations.md").read_text()


def test_every_path_exists() -> None:
    paths = set(re.findall(r"`?((?:deployment|docs|\.github)/[\w./-]+\.(?:ya?ml|sh|json|md))", DOC))
    paths |= {"Dockerfile.production", "docker-compose.yml", ".checkov.yaml"}
    assert len(paths) > 15
    missing = sorted(p for p in paths if not (ROOT / p).exists() and "/secrets/" not in p)
    assert not missing, missing


def test_every_setting_exists() -> None:
    fields = {f"VIBE_{name.upper()}" for name in Settings.model_fields}
    # VIBE_TOKEN and VIBE_WORKERS are read by commands (`mcp`, `serve`), not settings: their tests
    # are tests/e2e/test_bridge.py and test_serve_workers.py.
    named = set(re.findall(r"\b(VIBE_[A-Z_]+[A-Z])\b", DOC)) - {"VIBE_TOKEN", "VIBE_ENSEMBLE", "VIBE_WORKERS"}
    assert named and not named - fields, sorted(named - fields)


def test_every_alert_is_documented() -> None:
    rules = one("PrometheusRule", "vibe-ensemble")["spec"]["groups"][0]["rules"]
    for rule in rules:
        assert f"`{rule['alert']}`" in DOC, rule["alert"]


def test_every_cli_command_exists() -> None:
    import typer.main

    group = typer.main.get_command(app)
    commands = set(group.list_commands(None))  # type: ignore[attr-defined]  # the root group lists lazily
    code = re.findall(r"```(?:sh|bash)\n(.*?)```", DOC, re.S) + re.findall(r"`([^`\n]+)`", DOC)
    lines = [line.split(" #")[0] for block in code for line in block.splitlines()]
    named = {m for line in lines for m in re.findall(r"(?<![\w/-])(?<!-n )vibe-ensemble ([a-z]+)\b", line)}
    assert {"migrate", "audit", "token", "backup", "doctor"} <= named
    assert named <= commands, sorted(named - commands)


def test_the_schedules_in_the_table_are_the_cronjobs() -> None:
    for name, schedule in (("daily", "0 2 * * *"), ("weekly", "0 1 * * 0")):
        assert one("CronJob", f"vibe-ensemble-backup-{name}")["spec"]["schedule"] == schedule
    assert "02:00 every day" in DOC and "01:00 on Sunday" in DOC
    assert yaml  # the manifests are read through support.one


def test_the_dockerfiles_run_command_is_the_documented_one() -> None:
    """Dockerfile.production's header gave a `podman run` without VIBE_METRICS_TOKEN (the production
    profile refuses to start) and without `--migrate` (a new volume has no schema): it matches the
    documented command now, image name aside, and starts with the secrets production asks for."""
    header = (ROOT / "Dockerfile.production").read_text().split("# --- builder")[0]
    lines = [line.removeprefix("#").strip() for line in header.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("podman run"))
    command = [lines[start]]
    while command[-1].endswith("\\"):
        command.append(lines[start + len(command)])
    documented = DOC.split("Run it as production does:")[1].split("```sh\n")[1].split("\n```")[0]

    def words(text: str) -> list[str]:
        return " ".join(line.strip().rstrip("\\").strip() for line in text.splitlines()).split()

    ours, theirs = words("\n".join(command)), words(documented)
    assert ours[:-3] == theirs[:-3] and ours[-2:] == theirs[-2:] == ["serve", "--migrate"], (ours, theirs)
    required = {"VIBE_REQUEST_STATE_KEY", "VIBE_SESSION_SECRET", "VIBE_METRICS_TOKEN"}
    assert required <= {m for m in re.findall(r"-e (VIBE_\w+)=", " ".join(ours))}, ours


def test_s3_backups_say_the_production_image_lacks_boto3() -> None:
    """`backup create --to s3://…` in the production image advised a pip install the read-only image
    cannot follow: where S3 is offered, the docs say the image has no s3 extra."""
    lock = (ROOT / "requirements-runtime.lock").read_text()
    assert "boto3" not in lock  # the image installs exactly this lock; if it ever has boto3, drop this test
    backups = (ROOT / "docs" / "backups.md").read_text()
    s3 = backups.split("## S3-compatible storage")[1].split("\n## ")[0]
    assert "production image" in s3 and "does not include" in s3, s3
    assert "does not include" in DOC.split("## Backup and restore")[1].split("### Restore")[0]
    readme = (ROOT / "README.md").read_text()
    assert "production image does not include" in readme
