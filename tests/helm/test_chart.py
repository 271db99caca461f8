"""The Helm chart (helm/gateway), rendered by Helm's own Go SDK and checked object by object.

No helm binary and no cluster: see tests/helm/rendering.py. The values cases are the chart's
defaults and helm/gateway/ci/*-values.yaml (production: HPA, PDB, ServiceMonitor, dashboard
and Redis on; dev: one replica, a Secret made from values, no PostgreSQL).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (the dev extra)")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

import helm_python

from capture.writer import DRAIN_MARGIN_S
from gateway.app import CAPTURE_DRAIN_SECONDS, SHADOW_GRACE_SECONDS
from gateway.draining import STREAM_END_MARGIN_S
from gateway.settings import parse_settings
from tests.helm.rendering import (
    CHART,
    DASHBOARD,
    REPO,
    Manifest,
    kubernetes_versions,
    lint,
    pod_specs,
    render,
    render_files,
    schema_problems,
    values_cases,
)

CASES = values_cases()
DEV_SECRET_VALUES = ["sk-dev-not-a-real-key-7c1e", "sk-gateway-dev-2b9d"]


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart; until the Grafana dashboard is in it, a copy with a placeholder dashboard,
    so that the cases that enable it still test everything else
    (test_the_chart_ships_the_grafana_dashboard says what is missing)."""
    if DASHBOARD.is_file():
        return CHART
    copy = tmp_path_factory.mktemp("chart") / "gateway"
    shutil.copytree(CHART, copy)
    placeholder = copy / DASHBOARD.relative_to(CHART)
    placeholder.parent.mkdir(exist_ok=True)
    placeholder.write_text(json.dumps({"title": "placeholder", "panels": []}, indent=2) + "\n")
    return copy


@pytest.fixture(scope="session")
def rendered(chart: Path) -> dict[str, list[Manifest]]:
    return {case: render(values, chart=chart) for case, values in CASES.items()}


def only(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [m for m in manifests if m.kind == kind and m.name.endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[str(m) for m in found]}"
    return found[0]


def deployment(manifests: list[Manifest]) -> Manifest:
    return only(manifests, "Deployment")


def container(manifest: Manifest) -> dict[str, Any]:
    containers = manifest.body["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def is_hook(manifest: Manifest) -> bool:
    return "helm.sh/hook" in manifest.annotations


def fake_environment(manifest: Manifest) -> dict[str, str]:
    """A value for every environment variable the container gets (from Secrets or not)."""
    return {env["name"]: f"value-of-{env['name']}" for env in container(manifest).get("env", [])}


def config_of(manifests: list[Manifest], configmap: str) -> Any:
    return only(manifests, "ConfigMap", configmap).body["data"]["gateway.yaml"]


def test_the_cases_cover_production_and_dev() -> None:
    assert {"default", "production", "dev"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict_is_clean(case: str, chart: Path) -> None:
    assert lint(CASES[case], chart=chart) == []


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid_for_kubernetes(
    case: str, rendered: dict[str, list[Manifest]]
) -> None:
    problems = [
        problem
        for manifest in rendered[case]
        for version in kubernetes_versions()
        for problem in schema_problems(manifest, version)
    ]
    assert problems == []


def test_schema_validation_catches_a_wrong_field(rendered: dict[str, list[Manifest]]) -> None:
    """The validation is strict: a misspelt or mistyped field is reported, not ignored."""
    body = json.loads(json.dumps(deployment(rendered["default"]).body))
    body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpget"] = {}
    body["spec"]["replicas"] = "2"
    problems = schema_problems(Manifest("edited", body), "1.30")
    assert problems and ("httpget" in problems[0] or "replicas" in problems[0])
    monitor = json.loads(json.dumps(only(rendered["production"], "ServiceMonitor").body))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert any("intervall" in p for p in schema_problems(Manifest("edited", monitor), "1.30"))


@pytest.mark.parametrize(
    ("case", "kinds"),
    [
        (
            "default",
            {"ConfigMap": 2, "Deployment": 1, "Job": 1, "PodDisruptionBudget": 1, "Service": 1}
            | {"ServiceAccount": 1},
        ),
        (
            "production",
            {"ConfigMap": 3, "Deployment": 1, "Job": 1, "PodDisruptionBudget": 1, "Service": 1}
            | {"ServiceAccount": 1, "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1},
        ),
        ("dev", {"ConfigMap": 1, "Deployment": 1, "Secret": 1, "Service": 1, "ServiceAccount": 1}),
    ],
)
def test_each_case_renders_the_expected_objects(
    case: str, kinds: dict[str, int], rendered: dict[str, list[Manifest]]
) -> None:
    counted: dict[str, int] = {}
    for manifest in rendered[case]:
        counted[manifest.kind] = counted.get(manifest.kind, 0) + 1
    assert counted == kinds


@pytest.mark.parametrize("case", CASES)
def test_pods_run_unprivileged_on_a_read_only_root(
    case: str, rendered: dict[str, list[Manifest]]
) -> None:
    workloads = list(pod_specs(rendered[case]))
    assert workloads
    for manifest, pod in workloads:
        assert pod["automountServiceAccountToken"] is False, manifest
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for spec in pod["containers"]:
            security = spec["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "limits" in spec["resources"] and "requests" in spec["resources"]
            mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be writable"
            assert volumes[mounts["/etc/gateway"]]["configMap"]["name"]


def test_the_image_user_is_the_one_the_chart_runs_as(
    rendered: dict[str, list[Manifest]],
) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^FROM .* AS build$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["gateway"\]$', final_stage, re.MULTILINE)
    assert re.search(
        r"^CMD \[\"serve\", \"--config\", \"/etc/gateway/gateway.yaml\"", final_stage, re.M
    )
    user = re.search(r"^USER (\d+):(\d+)$", final_stage, re.MULTILINE)
    assert user is not None, "the image's USER must be numeric, for runAsNonRoot"
    pod = deployment(rendered["default"]).body["spec"]["template"]["spec"]
    assert int(user.group(1)) == pod["securityContext"]["runAsUser"]
    assert int(user.group(2)) == pod["securityContext"]["runAsGroup"]
    gateway = container(deployment(rendered["default"]))
    assert re.search(rf"^EXPOSE {gateway['ports'][0]['containerPort']}$", final_stage, re.M)
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", final_stage)


@pytest.mark.parametrize("case", CASES)
def test_probes_ports_and_command(case: str, rendered: dict[str, list[Manifest]]) -> None:
    gateway = container(deployment(rendered[case]))
    (port,) = gateway["ports"]
    assert port["name"] == "http"
    assert gateway["command"] == ["gateway"]
    assert gateway["args"] == [
        "serve",
        "--config",
        "/etc/gateway/gateway.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        str(port["containerPort"]),
    ]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = only(rendered[case], "Service")
    assert service.body["spec"]["ports"][0]["targetPort"] == "http"
    selector = deployment(rendered[case]).body["spec"]["selector"]["matchLabels"]
    assert service.body["spec"]["selector"] == selector


def drain_seconds(manifests: list[Manifest]) -> float:
    """From the pod's deletion to the gateway's exit at the latest, by the gateway's own
    figures: the preStop sleep, then after SIGTERM the configured delay and timeout, uvicorn's
    cancel of what is left, the shadows' grace and the capture queue's drain."""
    import yaml

    environ = fake_environment(deployment(manifests))
    server = parse_settings(yaml.safe_load(config_of(manifests, "gateway")), environ).server
    pre_stop = container(deployment(manifests))["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    return (
        int(pre_stop[1])
        + server.shutdown_delay_s
        + server.shutdown_timeout_s
        + STREAM_END_MARGIN_S
        + SHADOW_GRACE_SECONDS
        + CAPTURE_DRAIN_SECONDS
        + DRAIN_MARGIN_S
    )


def grace_period(manifests: list[Manifest]) -> int:
    grace: int = deployment(manifests).body["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    return grace


@pytest.mark.parametrize("case", CASES)
def test_termination_outlasts_the_drain(case: str, rendered: dict[str, list[Manifest]]) -> None:
    """SIGTERM comes after the preStop sleep; then the gateway finishes calls in flight (open
    streams end at its deadline), shadows and the capture queue drain: the kubelet must not
    SIGKILL before all of it is done."""
    manifests = rendered[case]
    assert grace_period(manifests) > drain_seconds(manifests)
    strategy = deployment(manifests).body["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_grace_period_follows_the_configured_drain(chart: Path) -> None:
    """A long drain for long streams lengthens the pods' grace period with it."""
    base = render({}, chart=chart)
    long = render(
        {"config": {"server": {"shutdown_delay_s": 10, "shutdown_timeout_s": 900.5}}},
        chart=chart,
    )
    assert grace_period(long) > drain_seconds(long) > 900
    assert grace_period(long) - grace_period(base) == math.ceil(10 + 900.5 - 120)
    # A longer period than the drain's is the operator's to choose, and kept.
    assert grace_period(render({"terminationGracePeriodSeconds": 3600}, chart=chart)) == 3600


@pytest.mark.parametrize("case", CASES)
def test_the_config_is_one_the_gateway_accepts(
    case: str, rendered: dict[str, list[Manifest]]
) -> None:
    """The ConfigMap's gateway.yaml passes the gateway's own typed model, with the environment
    the pod gets: every ${NAME} it refers to is supplied."""
    import yaml

    manifests = rendered[case]
    environ = fake_environment(deployment(manifests))
    settings = parse_settings(yaml.safe_load(config_of(manifests, "gateway")), environ)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == container(deployment(manifests))["ports"][0]["containerPort"]
    assert settings.routes


def test_redis_enabled_puts_it_in_the_config(rendered: dict[str, list[Manifest]]) -> None:
    """With redis.enabled (production), the replicas share limits, keys and the cache."""
    import yaml

    for case, manifests in rendered.items():
        config = yaml.safe_load(config_of(manifests, "gateway"))
        enabled = any(
            e["name"] == "GATEWAY_REDIS_URL" for e in container(deployment(manifests))["env"]
        )
        assert (config.get("redis") == {"url": "${GATEWAY_REDIS_URL}"}) is enabled, case


@pytest.mark.parametrize("case", CASES)
def test_secrets_come_from_secrets_only(case: str, rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered[case]
    configs = "\n".join(
        json.dumps(m.body.get("data", {})) for m in manifests if m.kind == "ConfigMap"
    )
    for value in DEV_SECRET_VALUES + list(CASES[case].get("secrets", {}).get("data", {}).values()):
        assert value not in configs
    assert not re.search(r"sk-[A-Za-z0-9]", configs)
    assert not re.search(r"://[^/@:\s\"]+:[^$/@\s\"][^/@\s\"]*@", configs), "password in a URL"
    for _, pod in pod_specs(manifests):
        for spec in pod["containers"]:
            for env in spec.get("env", []):
                if re.search(r"KEY|URL|PASSWORD|TOKEN|SECRET", env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), env


def test_the_secret_named_in_the_pods_holds_the_keys_they_need(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["dev"]
    secret = only(manifests, "Secret")
    for env in container(deployment(manifests))["env"]:
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret.name
        assert ref["key"] in secret.body["data"] or ref.get("optional") is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"config": {"providers": {"openai": {"base_url": "https://x/v1", "api_key": "sk-1"}}}},
            "config.providers.openai.api_key",
        ),
        ({"config": {"auth": {"keys": [{"name": "a", "key": "literal"}]}}}, "auth.keys[0].key"),
        (
            {"config": {"capture": {"database_url": "postgresql+asyncpg://gw:hunter2@db/gw"}}},
            "database_url: the password",
        ),
        ({"postgresql": {"enabled": False}}, "only postgresql.enabled supplies"),
        (
            {"secrets": {"create": True, "data": {"openai-api-key": "k", "database-url": "u"}}},
            'secrets.data has no "gateway-api-key"',
        ),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        (
            {"terminationGracePeriodSeconds": 75},
            "terminationGracePeriodSeconds 75 is shorter than the drain, 170 s",
        ),
    ],
)
def test_mistakes_stop_the_render_with_a_clear_message(
    values: dict[str, Any], message: str, chart: Path
) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values, chart=chart)
    assert any(message in finding for finding in lint(values, chart=chart))


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    rendered: dict[str, list[Manifest]],
) -> None:
    import yaml

    manifests = rendered["production"]
    job = only(manifests, "Job")
    hook_config = only(manifests, "ConfigMap", "-migrations")
    for manifest in (job, hook_config):
        assert manifest.annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        policy = manifest.annotations["helm.sh/hook-delete-policy"].split(",")
        assert "before-hook-creation" in policy
    # The Job's ConfigMap is created before the Job; the release's own objects do not exist yet.
    assert int(hook_config.annotations["helm.sh/hook-weight"]) < int(
        job.annotations["helm.sh/hook-weight"]
    )
    pod = job.body["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert (
        pod["serviceAccountName"]
        != deployment(manifests).body["spec"]["template"]["spec"]["serviceAccountName"]
    )
    migrations = container(job)
    assert migrations["command"] == ["gateway"]
    assert migrations["args"] == ["db", "upgrade", "--config", "/etc/gateway/gateway.yaml"]
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == hook_config.name
    # Only the database URL, from the PostgreSQL Secret: no provider or gateway key.
    (env,) = migrations["env"]
    assert env["name"] == "GATEWAY_DATABASE_URL"
    assert env["valueFrom"]["secretKeyRef"] == {"name": "gateway-postgresql", "key": "uri"}
    settings = parse_settings(
        yaml.safe_load(hook_config.body["data"]["gateway.yaml"]),
        {"GATEWAY_DATABASE_URL": "postgresql+asyncpg://gw@db:5432/gw"},
    )
    assert settings.capture.database_url == "postgresql+asyncpg://gw@db:5432/gw"
    # The Job's pods are not serving pods.
    selector = deployment(manifests).body["spec"]["selector"]["matchLabels"]
    labels = pod_labels(job)
    assert not all(labels.get(k) == v for k, v in selector.items())


def pod_labels(manifest: Manifest) -> dict[str, str]:
    return dict(manifest.body["spec"]["template"]["metadata"]["labels"])


def test_the_migration_jobs_command_migrates_a_database(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    """The Job's command and its ConfigMap, run here against SQLite (the real Job's target is
    PostgreSQL, which `gateway db upgrade` treats the same way)."""
    manifests = rendered["default"]
    config = tmp_path / "gateway.yaml"
    config.write_text(only(manifests, "ConfigMap", "-migrations").body["data"]["gateway.yaml"])
    args = [
        str(config) if a == "/etc/gateway/gateway.yaml" else a
        for a in container(only(manifests, "Job"))["args"]
    ]
    url = f"sqlite+aiosqlite:///{tmp_path / 'captures.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GATEWAY_DATABASE_URL": url},
    )
    assert result.returncode == 0, result.stderr
    assert "empty -> " in result.stdout


def test_env_names_are_unique_and_extra_env_takes_over_a_secret(chart: Path) -> None:
    extra = {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "o", "key": "k"}}}
    manifests = render({"extraEnv": [extra]}, chart=chart)
    env = container(deployment(manifests))["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert extra in env


def test_migrations_with_a_development_secret_get_a_hook_secret(chart: Path) -> None:
    """secrets.create makes the release's Secret after the pre-install hook has run: the Job
    reads the database URL from a hook Secret created before it."""
    values: dict[str, Any] = {
        "secrets": {
            "create": True,
            "data": {"gateway-api-key": "gk", "openai-api-key": "ok", "database-url": "pg://x"},
        }
    }
    manifests = render(values, chart=chart)
    hook_secret = only(manifests, "Secret", "-migrations")
    job = only(manifests, "Job")
    assert is_hook(hook_secret)
    assert int(hook_secret.annotations["helm.sh/hook-weight"]) < int(
        job.annotations["helm.sh/hook-weight"]
    )
    assert set(hook_secret.body["data"]) == {"database-url"}
    (env,) = container(job)["env"]
    assert env["valueFrom"]["secretKeyRef"]["name"] == hook_secret.name
    serving = [m for m in manifests if m.kind == "Secret" and not is_hook(m)]
    assert len(serving) == 1 and set(serving[0].body["data"]) == set(values["secrets"]["data"])


def test_no_migrations_without_postgresql(rendered: dict[str, list[Manifest]]) -> None:
    assert not [m for m in rendered["dev"] if is_hook(m)]


def test_a_config_change_rolls_the_pods(chart: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        manifest = deployment(render(values, chart=chart))
        return str(manifest.body["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"server": {"log_level": "debug"}}})


def test_autoscaling_owns_the_replica_count(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["production"]
    assert "replicas" not in deployment(manifests).body["spec"]
    hpa = only(manifests, "HorizontalPodAutoscaler").body["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment(manifests).name,
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert deployment(rendered["default"]).body["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("case", "budget"), [("default", {"maxUnavailable": 1}), ("production", {"minAvailable": 2})]
)
def test_the_disruption_budget_covers_the_serving_pods(
    case: str, budget: dict[str, int], rendered: dict[str, list[Manifest]]
) -> None:
    manifests = rendered[case]
    pdb = only(manifests, "PodDisruptionBudget").body["spec"]
    assert (
        pdb["selector"]["matchLabels"]
        == deployment(manifests).body["spec"]["selector"]["matchLabels"]
    )
    assert {k: v for k, v in pdb.items() if k != "selector"} == budget


def test_metrics_are_scraped_by_annotations_or_a_service_monitor(
    rendered: dict[str, list[Manifest]],
) -> None:
    annotations = deployment(rendered["default"]).body["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    production = rendered["production"]
    monitor = only(production, "ServiceMonitor")
    service = only(production, "Service")
    assert (
        monitor.body["spec"]["selector"]["matchLabels"].items()
        <= service.body["metadata"]["labels"].items()
    )
    (endpoint,) = monitor.body["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert monitor.body["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        "prometheus.io/scrape"
        not in (deployment(production).body["spec"]["template"]["metadata"]["annotations"])
    )


def test_redis_url_comes_from_its_secret(rendered: dict[str, list[Manifest]]) -> None:
    env = {e["name"]: e for e in container(deployment(rendered["production"]))["env"]}
    assert env["GATEWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "gateway-redis",
        "key": "url",
    }
    assert "GATEWAY_REDIS_URL" not in fake_environment(deployment(rendered["default"]))


def test_the_dashboard_configmap_is_labelled_for_grafana(
    rendered: dict[str, list[Manifest]], chart: Path
) -> None:
    dashboard = only(rendered["production"], "ConfigMap", "-dashboard")
    assert dashboard.body["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard.body["metadata"]["namespace"] == "monitoring"
    assert dashboard.annotations["grafana_folder"] == "AI gateway"
    shipped = (chart / "dashboards" / "gateway-overview.json").read_text()
    assert json.loads(dashboard.body["data"]["gateway-overview.json"]) == json.loads(shipped)


def test_the_chart_ships_the_grafana_dashboard() -> None:
    if not DASHBOARD.is_file():
        pytest.skip(f"{DASHBOARD.relative_to(REPO)} is not in the chart yet")
    json.loads(DASHBOARD.read_text())


def test_a_missing_dashboard_stops_the_render(tmp_path: Path) -> None:
    copy = tmp_path / "gateway"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("dashboards"))
    with pytest.raises(helm_python.HelmError, match=re.escape("gateway-overview.json is missing")):
        render({"grafana": {"dashboard": {"enabled": True}}}, chart=copy)


def test_notes_name_the_secrets_the_pods_need(chart: Path) -> None:
    notes = render_files(CASES["production"], chart=chart)["gateway/templates/NOTES.txt"]
    assert "http://gw-gateway.ai.svc:8080/v1" in notes
    assert "WEB_APP_KEY <- Secret gateway-keys, key web-app-key" in notes
    assert "GATEWAY_DATABASE_URL <- Secret gateway-postgresql, key uri" in notes
    dev = render_files(CASES["dev"], chart=chart)["gateway/templates/NOTES.txt"]
    assert "WARNING: secrets.create" in dev


def test_lint_script_runs_offline() -> None:
    """`python helm/lint.py` (make lint) is this module's checks as one command."""
    result = subprocess.run(
        [sys.executable, str(REPO / "helm" / "lint.py")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    if not DASHBOARD.is_file():
        assert "gateway-overview.json is missing" in result.stdout
        pytest.skip("helm/lint.py fails until the dashboard is in the chart")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all valid" in result.stdout
