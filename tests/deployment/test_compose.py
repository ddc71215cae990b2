"""docker-compose.yml: the stack, its server locked down as in Kubernetes, its config files present."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from vibe_ensemble.ops.config import Settings

from .support import ROOT


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_services() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "vibe-ensemble", "prometheus", "grafana"}
    assert services["vibe-ensemble"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"] and services["vibe-ensemble"]["command"] == ["serve"]
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} listens beyond loopback"


def test_server_runs_locked_down() -> None:
    for name in ("migrate", "vibe-ensemble"):
        server = compose()["services"][name]
        assert server["read_only"] is True and server["user"] == "1001:1001"
        assert server["cap_drop"] == ["ALL"] and "no-new-privileges:true" in server["security_opt"]
        assert server["build"]["target"] == "production"


def test_server_settings_exist() -> None:
    fields = {f"VIBE_{name.upper()}" for name in Settings.model_fields}
    env = compose()["services"]["vibe-ensemble"]["environment"]
    assert set(env) <= fields, sorted(set(env) - fields)


def test_secrets_are_required_not_defaulted() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for var in (
        "POSTGRES_PASSWORD",
        "VIBE_REQUEST_STATE_KEY",
        "VIBE_SESSION_SECRET",
        "VIBE_METRICS_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert re.search(r"\$\{" + var + r":\?", text), f"{var} must be required (${{{var}:?…}})"


def test_prometheus_and_grafana_files() -> None:
    prometheus = yaml.safe_load((ROOT / "deployment/prometheus/prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["vibe-ensemble:8080"]
    # /metrics answers only VIBE_METRICS_TOKEN: Prometheus reads it from the compose secret
    authorization = prometheus["scrape_configs"][0]["authorization"]
    assert authorization == {"type": "Bearer", "credentials_file": "/run/secrets/vibe_metrics_token"}
    assert compose()["secrets"]["vibe_metrics_token"] == {"environment": "VIBE_METRICS_TOKEN"}
    assert compose()["services"]["prometheus"]["secrets"] == ["vibe_metrics_token"]
    assert "VIBE_METRICS_TOKEN" in compose()["services"]["vibe-ensemble"]["environment"]
    for service in ("prometheus", "grafana"):
        for volume in compose()["services"][service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    datasource = yaml.safe_load(
        (ROOT / "deployment/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "deployment/grafana/dashboards/vibe-ensemble.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["datasources"][0]["uid"]}
