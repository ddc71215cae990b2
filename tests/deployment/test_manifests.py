"""The Kubernetes manifests: valid against the Kubernetes schemas, and our own policy on every workload."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from vibe_ensemble.ops.config import Settings

from .support import K8S, ROOT, by_kind, manifests, one, pod_spec

# kubernetes_validate is imported by the three tests that use it: its import builds a URI grammar
# (about a second), which every test process would pay at collection otherwise.

# The oldest Kubernetes we support (ValidatingAdmissionPolicy is GA from 1.30) and the newest the
# pinned kubernetes-validate wheel carries; both schemas ship inside the wheel.
KUBERNETES_VERSIONS = ["1.30.0", "1.34.0"]
# Custom resources have no schema in kubernetes-validate; test_custom_resources checks their shape.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
WORKLOAD_KINDS = {"Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet", "Pod"}
EXPECTED_FILES = {
    "namespace.yaml",
    "deployment.yaml",
    "service.yaml",
    "service-account.yaml",
    "configmap-production.yaml",
    "configmap-staging.yaml",
    "secret-template.yaml",
    "hpa.yaml",
    "pod-disruption-budget.yaml",
    "network-policy.yaml",
    "ingress.yaml",
    "monitoring.yaml",
    "backup-cronjob.yaml",
    "security-policies.yaml",
    "migration-job.yaml",
    "restore-job.yaml",
    "backup-list-job.yaml",
}


def test_every_listed_manifest_exists() -> None:
    assert {p.name for p in K8S.glob("*.yaml")} >= EXPECTED_FILES


def test_the_schemas_ship_inside_the_wheel() -> None:
    """Validation needs no network: the schemas for each pinned version lie in the package."""
    import kubernetes_validate

    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for version in KUBERNETES_VERSIONS:
        strict = schemas / f"v{version}-local-strict"
        assert (strict / "deployment-apps-v1.json").is_file(), f"no offline schema for {version}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    checked = 0
    for path, doc in manifests():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc}")
        checked += 1
    assert checked >= 25


def test_removed_kinds_and_unknown_fields_are_rejected() -> None:
    """The validator really rejects what Kubernetes would: a removed API and an unknown field."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    psp = {"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(SchemaNotFoundError):  # no schema for a kind Kubernetes removed
        kubernetes_validate.validate(psp, KUBERNETES_VERSIONS[0], strict=True)
    deployment = json.loads(json.dumps(one("Deployment", "vibe-ensemble")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_only_known_custom_resources() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in manifests()}
    custom = {k for k in kinds if "." in k[0].split("/")[0] and not k[0].split("/")[0].endswith(".k8s.io")}
    assert custom == CUSTOM_RESOURCES


# --- our policy on every workload --------------------------------------------------------------


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] in WORKLOAD_KINDS]


def test_there_are_workloads() -> None:
    names = {(w["kind"], w["metadata"]["name"]) for w in workloads()}
    assert ("Deployment", "vibe-ensemble") in names
    assert ("Job", "vibe-ensemble-migrate") in names
    assert {n for k, n in names if k == "CronJob"} == {
        "vibe-ensemble-backup-daily",
        "vibe-ensemble-backup-weekly",
    }


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: f"{w['kind']}-{w['metadata']['name']}")
def test_every_workload_is_locked_down(workload: dict[str, Any]) -> None:
    spec = pod_spec(workload)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1001
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        resources = container["resources"]
        assert resources["requests"] == {"cpu": "250m", "memory": "512Mi"}, container["name"]
        assert resources["limits"] == {"cpu": "1000m", "memory": "2Gi"}, container["name"]
        # the only writable paths: /tmp and the data or backup volume
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts
        assert mounts <= {"/tmp", "/data", "/backups"}


def test_the_server_deployment() -> None:
    deployment = one("Deployment", "vibe-ensemble")
    spec = deployment["spec"]
    # the HPA owns the count: a `replicas` here would reset it to that on every deploy's apply
    assert "replicas" not in spec
    assert (
        one("HorizontalPodAutoscaler", "vibe-ensemble")["spec"]["scaleTargetRef"]["name"] == "vibe-ensemble"
    )
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert container["args"] == ["serve"], "the Deployment never migrates: migration-job.yaml does"
    # SIGTERM comes after the preStop pause; the server then takes VIBE_SHUTDOWN_GRACE_S to drain
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    for name in ("configmap-production.yaml", "configmap-staging.yaml"):
        grace = int(configmap(name)["VIBE_SHUTDOWN_GRACE_S"])
        assert pod["terminationGracePeriodSeconds"] >= pause + grace + 5, name


def test_service_account_mounts_no_token() -> None:
    for account in by_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_namespaces_enforce_the_restricted_profile() -> None:
    for namespace in by_kind("Namespace"):
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels["vibe-ensemble.dev/pod-security"] == "enforced"
    binding = one("ValidatingAdmissionPolicyBinding", "vibe-ensemble-pod-security")
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "vibe-ensemble.dev/pod-security": "enforced"
    }


def test_manifests_carry_no_namespace() -> None:
    """The pipeline picks the environment with `kubectl -n`: a hard-coded namespace would defeat it."""
    cluster_scoped = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for path, doc in manifests():
        if doc["kind"] not in cluster_scoped:
            assert "namespace" not in doc["metadata"], f"{path.name}: {doc['kind']} sets a namespace"


def test_hpa() -> None:
    hpa = one("HorizontalPodAutoscaler", "vibe-ensemble")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"} == {"cpu", "memory"}
    assert kinds["Pods"]["pods"]["metric"]["name"] == "vibe_http_requests_per_second"
    up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
    assert up["policies"] == [{"type": "Percent", "value": 50, "periodSeconds": 30}]
    assert down["policies"] == [{"type": "Percent", "value": 10, "periodSeconds": 60}]
    assert down["stabilizationWindowSeconds"] > 0


def test_network_policy_denies_by_default() -> None:
    deny = one("NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    egress = one("NetworkPolicy", "vibe-ensemble-egress")["spec"]["egress"]
    assert {p["port"] for rule in egress for p in rule["ports"]} == {53, 5432}


def test_ingress_has_tls_and_stream_timeouts() -> None:
    ingress = one("Ingress", "vibe-ensemble")
    annotations = ingress["metadata"]["annotations"]
    assert "cert-manager.io/cluster-issuer" in annotations
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert not any("affinity" in key for key in annotations)
    assert ingress["spec"]["tls"][0]["secretName"]


def test_pdb_keeps_two() -> None:
    assert one("PodDisruptionBudget", "vibe-ensemble")["spec"]["minAvailable"] == 2


# --- configuration keys exist in our Settings ---------------------------------------------------


def configmap(name: str) -> dict[str, str]:
    docs = [doc for path, doc in manifests() if path.name == name]
    assert len(docs) == 1
    data: dict[str, str] = docs[0]["data"]
    return data


def env_names_set_by_manifests() -> set[str]:
    names = set()
    for path in ("configmap-production.yaml", "configmap-staging.yaml"):
        names |= set(configmap(path))
    for _, doc in manifests():
        if doc["kind"] == "Secret":
            names |= set(doc.get("stringData", {}))
        if doc["kind"] in WORKLOAD_KINDS:
            for container in pod_spec(doc)["containers"]:
                names |= {e["name"] for e in container.get("env", [])}
    return names


def test_every_config_key_is_a_setting() -> None:
    fields = {f"VIBE_{name.upper()}" for name in Settings.model_fields}
    names = env_names_set_by_manifests()
    assert names, "no settings found in the manifests"
    unknown = {n for n in names if n.startswith("VIBE_")} - fields
    assert not unknown, f"settings that do not exist in vibe_ensemble.ops.config.Settings: {sorted(unknown)}"
    assert all(n.startswith("VIBE_") for n in names), sorted(n for n in names if not n.startswith("VIBE_"))


@pytest.mark.parametrize("name", ["configmap-production.yaml", "configmap-staging.yaml"])
def test_configmap_values_are_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings load from exactly these variables (plus secrets), and production is safe to start."""
    for key, value in configmap(name).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIBE_DATABASE_URL", "postgresql+asyncpg://vibe:secret@db:5432/vibe")
    # as generate-secrets.sh makes them: random, so production's entropy check accepts them
    monkeypatch.setenv("VIBE_REQUEST_STATE_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("VIBE_SESSION_SECRET", secrets.token_urlsafe(32))
    monkeypatch.setenv("VIBE_METRICS_TOKEN", secrets.token_urlsafe(32))
    settings = Settings()
    assert settings.profile == ("production" if "production" in name else "staging")
    assert settings.unsafe_reasons() == []
    assert settings.host == "0.0.0.0" and settings.port == 8080


def test_a_misspelt_key_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"VIBE_{name.upper()}" for name in Settings.model_fields}
    assert "VIBE_SHUTDOWN_GRACE" not in fields and "VIBE_SHUTDOWN_GRACE_S" in fields


def test_secret_template_holds_no_real_value() -> None:
    secret = one("Secret", "vibe-ensemble-secrets")
    for key, value in secret["stringData"].items():
        assert "REPLACE" in value or "PASSWORD" in value, f"{key} looks like a real value"


# --- monitoring ---------------------------------------------------------------------------------


def test_custom_resources() -> None:
    monitor = one("ServiceMonitor", "vibe-ensemble")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    # /metrics answers only VIBE_METRICS_TOKEN, which the server gets from the same Secret key
    assert monitor["spec"]["endpoints"][0]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "vibe-ensemble-secrets", "key": "VIBE_METRICS_TOKEN"},
    }
    assert "VIBE_METRICS_TOKEN" in one("Secret", "vibe-ensemble-secrets")["stringData"]
    rules = one("PrometheusRule", "vibe-ensemble")["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r for r in rules}
    assert set(alerts) == {
        "VibeEnsembleHighErrorRate",
        "VibeEnsembleSlowRequests",
        "VibeEnsembleCrashLooping",
        "VibeEnsembleDatabaseUnreachable",
        "VibeEnsembleEventsNotListening",
        "VibeEnsembleDatabaseStalled",
        "VibeEnsembleNoRecentBackup",
        "VibeEnsembleCpuSaturated",
        "VibeEnsembleAtMaxReplicas",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    assert "0.05" in alerts["VibeEnsembleHighErrorRate"]["expr"]
    assert "26 * 3600" in alerts["VibeEnsembleNoRecentBackup"]["expr"]


def _exprs() -> tuple[list[str], list[str]]:
    """The PromQL of the alert rules, and of the dashboard's panels."""
    rules = one("PrometheusRule", "vibe-ensemble")["spec"]["groups"][0]["rules"]
    dashboard = json.loads((ROOT / "deployment/grafana/dashboards/vibe-ensemble.json").read_text())
    return [r["expr"] for r in rules], [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


_MATCHER = re.compile(r'\s*,?\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def _selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each `vibe_…` series selector in `expr`: the metric and its label matchers (name, op, value).
    Read matcher by matcher: a route template's braces sit inside the quoted values."""
    found = []
    for match in re.finditer(r"\b(vibe_[a-z_]+)", expr):
        matchers, at = [], match.end()
        if expr[at : at + 1] == "{":
            at += 1
            while (m := _MATCHER.match(expr, at)) is not None:
                matchers.append((m.group(1), m.group(2), m.group(3)))
                at = m.end()
            assert expr[at:].lstrip().startswith("}"), f"unreadable selector in {expr!r}"
        found.append((match.group(1), matchers))
    return found


def _known_routes() -> set[str]:
    """Every route template the server labels requests with (the metrics' `route`)."""
    import tempfile

    from vibe_ensemble.api.app import create_app
    from vibe_ensemble.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Runtime(Settings(data_dir=Path(tmp))))
        return set(app.openapi()["paths"]) | {"/mcp", "/healthz", "/readyz", "/metrics", "unmatched"}


def test_alerts_and_dashboard_use_metrics_the_server_exports() -> None:
    """Every series an alert or a panel selects exists: a metric the server exports, with labels it
    has and values it gives them (`status` is a class, `5xx`, never `503`: such a rule never fires)."""
    from vibe_ensemble.api.metrics import database_gauges
    from vibe_ensemble.ops.metrics import METHODS, REGISTRY
    from vibe_ensemble.services.stats import ServerStats

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    labels: dict[str, set[str]] = {}
    for metric in REGISTRY.collect():
        for suffix in suffixes.get(metric.type, [""]):
            names = set(getattr(REGISTRY._names_to_collectors[metric.name + suffix], "_labelnames", ()))
            labels[metric.name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
    # and the figures /metrics reads from the database when it is scraped
    stats = ServerStats(issues={"open": 1}, agents={"idle": 1}, live_leases=0, unread_mail=0, read_at=0.0)
    for metric in database_gauges(0.0, stats, 0.0):
        labels[metric.name] = {name for sample in metric.samples for name in sample.labels}
    values = {
        "status": {f"{n}xx" for n in range(1, 6)} | {"other"},
        "method": set(METHODS) | {"other"},
        "route": _known_routes(),
    }
    rules, panels = _exprs()
    selectors = [s for expr in rules + panels for s in _selectors(expr)]
    assert selectors, "no vibe_ metric in the alerts or the dashboard"
    missing = {name for name, _ in selectors} - set(labels) - {"vibe_http_requests_per_second"}
    assert not missing, f"metrics the server does not export: {sorted(missing)}"
    for name, matchers in selectors:
        for label, op, value in matchers:
            if label == "namespace":  # added by Prometheus from the target, not by the server
                continue
            assert label in labels[name], f"{name} has no label {label!r}"
            if label not in values or op in ("!=", "!~"):
                continue
            wanted = value.split("|") if op == "=~" else [value]
            for one_value in wanted:
                hits = [v for v in values[label] if re.fullmatch(one_value, v)] if op == "=~" else [one_value]
                assert hits and set(hits) <= values[label], (
                    f'{name}{{{label}{op}"{value}"}}: the server never sets {label} to {one_value!r} '
                    f"(it sets {sorted(values[label])[:8]}…)"
                )
    # the excluded routes of the latency rule and panels are real templates too
    for _, matchers in selectors:
        for label, op, value in matchers:
            if label == "route" and op == "!~":
                assert set(value.split("|")) <= values["route"], value


def test_a_status_code_where_the_server_gives_a_class_is_caught() -> None:
    [(name, matchers)] = _selectors('sum(rate(vibe_http_requests_total{route="/readyz", status="503"}[2m]))')
    assert name == "vibe_http_requests_total"
    assert ("status", "=", "503") in matchers and "503" not in {f"{n}xx" for n in range(1, 6)}


def test_alerts_and_dashboard_keep_namespaces_apart() -> None:
    """Staging and production are scraped by the same Prometheus: every aggregation in a rule keeps
    `namespace`, and every dashboard series is of the namespace chosen at the top."""
    rules, panels = _exprs()
    for expr in rules:
        for match in re.finditer(r"\b(sum|min|max|avg|count)\s*(by\s*\(([^)]*)\))?\s*\(", expr):
            grouping = {g.strip() for g in (match.group(3) or "").split(",")}
            assert "namespace" in grouping, f"{match.group(0)!r} adds up namespaces: {expr}"
    for expr in panels:
        for name, matchers in _selectors(expr):
            assert ("namespace", "=", "$namespace") in matchers, f"{name} in {expr!r}"
    compose = yaml.safe_load((ROOT / "deployment/prometheus/prometheus.yml").read_text())
    assert compose["scrape_configs"][0]["static_configs"][0]["labels"]["namespace"]


def test_dashboard_configmap_matches_the_compose_dashboard() -> None:
    configmap_doc = one("ConfigMap", "vibe-ensemble-dashboard")
    embedded = json.loads(configmap_doc["data"]["vibe-ensemble.json"])
    on_disk = json.loads((ROOT / "deployment/grafana/dashboards/vibe-ensemble.json").read_text())
    assert embedded == on_disk, "monitoring.yaml's dashboard differs from deployment/grafana/dashboards"


# --- the pipeline's Role grants what the pipeline runs -------------------------------------------

# What each kubectl command of the deploy workflow asks of the API: (group, resource) -> verbs.
_KINDS = {
    "ConfigMap": ("", "configmaps"),
    "ServiceAccount": ("", "serviceaccounts"),
    "Service": ("", "services"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Deployment": ("apps", "deployments"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "CronJob": ("batch", "cronjobs"),
    "Job": ("batch", "jobs"),
}
_APPLY = {"get", "create", "patch"}  # client-side apply: read, then create or patch
_WATCHED = {"get", "list", "watch"}  # kubectl wait, delete --wait, rollout status
_COMMANDS: list[tuple[str, list[tuple[str, str, set[str]]]]] = [
    (r"get cronjob ", [("batch", "cronjobs", {"get"})]),
    (r"create job \S+ --from=cronjob/", [("batch", "jobs", {"create"}), ("batch", "cronjobs", {"get"})]),
    (r"create -f -", [("batch", "jobs", {"create"})]),  # the pre-upgrade backup's Job, relabelled
    (r"wait --for=condition=complete \S*job/", [("batch", "jobs", _WATCHED)]),
    (r"delete job \S+ .*--wait=true", [("batch", "jobs", {"delete"} | _WATCHED)]),
    (
        r"logs \S*job/",
        [("batch", "jobs", {"get"}), ("", "pods", {"get", "list"}), ("", "pods/log", {"get"})],
    ),
    (r"rollout status deployment/", [("apps", "deployments", _WATCHED)]),
    (
        r"rollout undo deployment/",
        [("apps", "deployments", {"get", "patch"}), ("apps", "replicasets", {"get", "list"})],
    ),
]


def _applied_files(script: str, line: str) -> list[str]:
    """The manifests a `kubectl apply` line applies: a named file, the config maps ($CONFIGMAP), or
    each of the `for f in …` loop around it."""
    if "$CONFIGMAP" in line:
        return ["configmap-production.yaml", "configmap-staging.yaml"]
    if named := re.search(r"deployment/k8s/([\w-]+\.yaml)", line):
        return [named.group(1)]
    loop = re.search(r"for f in ([\w\s-]+); do", script)
    assert loop and "$f" in line, f"cannot tell what this applies: {line}"
    return [f"{name}.yaml" for name in loop.group(1).split()]


def _needed_by_the_workflow() -> set[tuple[str, str, str]]:
    workflow = yaml.safe_load((ROOT / ".github/workflows/production-deployment.yml").read_text())
    needed: set[tuple[str, str, str]] = set()
    scripts = [step.get("run", "") for step in workflow["jobs"]["staging"]["steps"]]
    lines = [(s, line) for s in scripts for line in s.replace("\\\n", " ").splitlines()]
    commands = [(s, line) for s, line in lines if re.search(r"\bkubectl\s", line)]
    assert len(commands) >= 10, commands
    for script, line in commands:
        command = line[line.index("kubectl") :]
        if " apply " in command:
            for name in _applied_files(script, line):  # the line: `sed … FILE | kubectl apply -f -`
                for _, doc in (pair for pair in manifests() if pair[0].name == name):
                    group, resource = _KINDS[doc["kind"]]
                    needed |= {(group, resource, verb) for verb in _APPLY}
            continue
        asks = [wants for pattern, wants in _COMMANDS if re.search(pattern, command)]
        assert asks, f"the test does not know what `{command}` asks of the API: add it to _COMMANDS"
        needed |= {(g, r, v) for wants in asks for g, r, verbs in wants for v in verbs}
    return needed


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_deployer_role_grants_exactly_what_the_workflow_runs() -> None:
    role = one("Role", "vibe-ensemble-deployer")
    assert all("resourceNames" not in rule for rule in role["rules"])
    needed, granted = _needed_by_the_workflow(), _granted(role)
    assert not needed - granted, f"the workflow would be Forbidden: {sorted(needed - granted)}"
    assert not granted - needed, f"granted but never used by the workflow: {sorted(granted - needed)}"


def test_the_pre_migration_backup_is_skipped_only_when_its_cronjob_is_missing() -> None:
    """A Forbidden (or any other error) reading the CronJob used to skip the backup silently."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/production-deployment.yml").read_text())
    [step] = [s for s in workflow["jobs"]["staging"]["steps"] if s.get("name", "").startswith("Back up")]
    script = step["run"]
    assert ">/dev/null 2>&1" not in script
    assert "(NotFound)" in script and "exit 1" in script and "::error::" in script


def test_the_image_name_is_lower_case_and_the_build_time_is_passed() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/production-deployment.yml").read_text())
    text = (ROOT / ".github/workflows/production-deployment.yml").read_text()
    assert "github.repository }}" not in text, "ghcr.io/${{ github.repository }} keeps an owner's capitals"
    assert "${GITHUB_REPOSITORY,,}" in text
    [build] = [s for s in workflow["jobs"]["build"]["steps"] if s.get("id") == "build"]
    assert "CREATED=${{ steps.meta.outputs.created }}" in build["with"]["build-args"]


def test_the_restore_job_has_the_backups_and_the_database_and_is_never_applied_by_the_pipeline() -> None:
    """The restore runbook's Job: the backups volume, the servers' settings (their database), and the
    three steps; applied by an operator with the backup id filled in, never by a deploy."""
    job = one("Job", "vibe-ensemble-restore")
    spec = pod_spec(job)
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]}
    assert claims[mounts["/backups"]] == "vibe-ensemble-backups"
    assert {"configMapRef": {"name": "vibe-ensemble-config"}} in container["envFrom"]
    assert {"secretRef": {"name": "vibe-ensemble-secrets"}} in container["envFrom"]
    script = container["args"][0]
    assert "id=REPLACE-WITH-BACKUP-ID" in script
    steps = [
        line.split("vibe-ensemble ", 1)[1].split()[:2]
        for line in script.splitlines()
        if "vibe-ensemble " in line
    ]
    assert steps == [["backup", "verify"], ["backup", "restore"], ["doctor"]]
    assert (
        job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "vibe-ensemble"
    )  # egress
    workflow = (ROOT / ".github/workflows/production-deployment.yml").read_text()
    assert "restore-job" not in workflow


@pytest.mark.parametrize(
    ("job", "configmap", "host"),
    [
        ("staging", "configmap-staging.yaml", "vibe-staging.example.com"),
        ("production", None, "vibe.example.com"),
    ],
)
def test_each_environment_rolls_out_an_ingress_for_its_own_host(
    tmp_path: Path, job: str, configmap: str | None, host: str
) -> None:
    """Staging and production share ingress.yaml: the roll-out gives it the host of the environment's
    ConfigMap (staging's Ingress claimed vibe.example.com, production's host, in a second namespace).
    The step runs as written, with a `kubectl` that prints what it would apply."""
    import os
    import subprocess

    workflow = yaml.safe_load((ROOT / ".github/workflows/production-deployment.yml").read_text())
    steps = workflow["jobs"]["staging"]["steps"]  # production's are the same (a YAML anchor)
    [script] = [s["run"] for s in steps if s.get("name") == "Roll out"]
    env_cm = workflow["jobs"][job]["env"]["CONFIGMAP"]
    (tmp_path / "kubectl").write_text('#!/bin/sh\ncase "$*" in *"apply -f -"*) cat; echo "---";; esac\n')
    (tmp_path / "kubectl").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "CONFIGMAP": env_cm,
        "REF": "img@sha256:0",
    }
    done = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [ingress] = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Ingress"]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host]
    assert ingress["spec"]["tls"][0]["hosts"] == [host]
    settings = yaml.safe_load((K8S / env_cm).read_text())["data"]
    assert settings["VIBE_PUBLIC_URL"] == f"https://{host}" and host in settings["VIBE_ALLOWED_HOSTS"]


def _references(workload: dict[str, Any]) -> set[tuple[str, str]]:
    """What a workload's pods need to exist before they can start: (kind, name)."""
    spec = pod_spec(workload)
    needed = {("ServiceAccount", spec.get("serviceAccountName", "default"))}
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                needed.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                needed.add(("Secret", source["secretRef"]["name"]))
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                needed.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
            if "secretKeyRef" in ref:
                needed.add(("Secret", ref["secretKeyRef"]["name"]))
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            needed.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            needed.add(("Secret", volume["secret"]["secretName"]))
        if "persistentVolumeClaim" in volume:
            needed.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    return needed


def test_a_first_deploy_applies_what_each_workload_needs_before_the_workload() -> None:
    """Into a fresh namespace (only namespace.yaml, security-policies.yaml and the Secret applied by
    hand, docs: Secrets), each workload the deploy applies finds its ServiceAccount, ConfigMap, Secret
    and claims already there. The migration Job once ran as a ServiceAccount applied only later, at
    the roll-out: a first deploy failed at the migration."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/production-deployment.yml").read_text())
    doc = (ROOT / "docs" / "deployment" / "production-operations.md").read_text()
    assert doc.index("### Secrets") < doc.index("### Deploy"), "the Secret is applied before the first deploy"
    by_hand = doc[doc.index("### Deploy") : doc.index("### Verify")]  # the same steps, for a deploy by hand
    job = by_hand.index("apply -f deployment/k8s/migration-job.yaml")
    assert by_hand.index("apply -f deployment/k8s/service-account.yaml") < job
    assert by_hand.index("apply -f deployment/k8s/configmap-production.yaml") < job
    secret = one("Secret", "vibe-ensemble-secrets")["metadata"]["name"]
    for configmap in ("configmap-production.yaml", "configmap-staging.yaml"):
        applied = {("Secret", secret), ("ServiceAccount", "default")}
        checked: list[str] = []
        for step in workflow["jobs"]["staging"]["steps"]:
            script = step.get("run", "")
            for line in script.replace("\\\n", " ").splitlines():
                if not re.search(r"\bkubectl\s.*\sapply\s", line):
                    continue
                files = _applied_files(script, line)
                if "$CONFIGMAP" in line:
                    files = [configmap]
                for name in files:
                    for _, manifest in (pair for pair in manifests() if pair[0].name == name):
                        if manifest["kind"] in WORKLOAD_KINDS:
                            missing = _references(manifest) - applied
                            assert not missing, f"{name} is applied before {sorted(missing)} ({configmap})"
                            checked.append(manifest["metadata"]["name"])
                        applied.add((manifest["kind"], manifest["metadata"]["name"]))
        assert "vibe-ensemble-migrate" in checked and "vibe-ensemble" in checked, checked


@pytest.mark.parametrize("name", ["configmap-production.yaml", "configmap-staging.yaml"])
def test_connections_at_the_hpa_ceiling_stay_within_the_documented_budget(name: str) -> None:
    """maxReplicas x workers x (VIBE_DB_POOL_SIZE + 2): staging left the pool at its default (20),
    so 20 x 22 = 440 connections, where the docs budget 240."""
    doc = (ROOT / "docs" / "deployment" / "production-operations.md").read_text()
    budget = re.search(r"\(VIBE_DB_POOL_SIZE \+ 2\)` connections: [^=]+= (\d+) with these", doc)
    assert budget, "the documented connection budget"
    data = configmap(name)
    assert "VIBE_DB_POOL_SIZE" in data, f"{name} leaves the pool at its default"
    ceiling = one("HorizontalPodAutoscaler", "vibe-ensemble")["spec"]["maxReplicas"]
    workers = int(data.get("VIBE_WORKERS", "1"))
    connections = ceiling * workers * (int(data["VIBE_DB_POOL_SIZE"]) + 2)
    assert connections <= int(budget.group(1)), (name, connections)


def test_the_pre_upgrade_backup_is_labelled_pre_upgrade_not_daily(tmp_path: Path) -> None:
    """The pipeline's backup before the migration was a copy of the daily CronJob's Job, labelled
    daily: each deploy pushed one of the 30 kept daily backups out. The step runs as written, with a
    `kubectl` that renders the CronJob's Job and keeps what is created."""
    import os
    import subprocess

    workflow = yaml.safe_load((ROOT / ".github/workflows/production-deployment.yml").read_text())
    [script] = [
        s["run"] for s in workflow["jobs"]["staging"]["steps"] if s.get("name", "").startswith("Back up")
    ]
    cronjob = one("CronJob", "vibe-ensemble-backup-daily")
    rendered = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}}
    rendered["spec"] = cronjob["spec"]["jobTemplate"]["spec"]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(rendered))
    (tmp_path / "kubectl").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *"get cronjob"*) echo cronjob.batch/vibe-ensemble-backup-daily;;\n'
        f'  *"--dry-run=client -o yaml"*) cat {tmp_path / "job.yaml"};;\n'
        f'  *"create -f -"*) cat > {tmp_path / "created.yaml"};;\n'
        "esac\n"
    )
    (tmp_path / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "NAMESPACE": "ns", "GITHUB_RUN_ID": "7"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    created = yaml.safe_load((tmp_path / "created.yaml").read_text())
    (container,) = pod_spec({"kind": "Job", "spec": created["spec"]})["containers"]
    assert "backup create --to /backups --label pre-upgrade" in container["args"][0], container["args"]
    assert "--label daily" not in container["args"][0]
    doc = (ROOT / "docs" / "deployment" / "production-operations.md").read_text()
    assert "`pre-upgrade`" in doc.split("## Backup and restore")[1].split("### Restore")[0]


def test_the_backup_list_job_lists_the_volume_and_is_never_applied_by_the_pipeline() -> None:
    """The runbook said `backup list` in a backup Job's log names the backups; no Job ran it. A one-off
    Job lists the volume the backup Jobs write, with their settings, applied by an operator."""
    job = one("Job", "vibe-ensemble-backup-list")
    spec = pod_spec(job)
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]}
    assert claims[mounts["/backups"]] == "vibe-ensemble-backups"
    assert (
        container["envFrom"]
        == pod_spec(one("CronJob", "vibe-ensemble-backup-daily"))["containers"][0]["envFrom"]
    )
    assert container["args"][0].strip() == "vibe-ensemble backup list --store /backups"
    assert "backup-list-job" not in (ROOT / ".github/workflows/production-deployment.yml").read_text()
    doc = (ROOT / "docs" / "deployment" / "production-operations.md").read_text()
    assert "kubectl -n vibe-ensemble apply -f deployment/k8s/backup-list-job.yaml" in doc
    assert "`backup list` in a backup Job's log" not in doc
