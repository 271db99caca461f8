"""Render the Helm chart and check what comes out, without a helm binary or a cluster.

Rendering and linting are Helm's own: ``helm-python-sdk`` (import name ``helm_python``) binds
with ctypes to a shared library built from Helm's Go SDK, shipped inside its wheel; no
``helm`` binary is involved. Every rendered object is then validated against the Kubernetes
OpenAPI schemas that ``kubernetes-validate`` ships (strict: unknown fields are errors). The
ServiceMonitor, a Prometheus Operator CRD with no schema there, is checked against the subset
of its CRD schema written below.

Used by ``tests/helm/test_chart.py`` and by ``python helm/lint.py`` (``make lint``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "gateway"
CI_VALUES = CHART / "ci"
DASHBOARD = CHART / "dashboards" / "gateway-overview.json"
RELEASE = "gw"
NAMESPACE = "ai"

MINIMUM_KUBERNETES = "1.25"
"""The chart's floor (Chart.yaml kubeVersion)."""
TARGET_KUBERNETES = "1.30"


def kubernetes_versions() -> list[str]:
    """The versions every manifest is validated against: the floor, the target, the newest
    schema kubernetes-validate ships."""
    newest = re.sub(r"^(\d+\.\d+).*", r"\1", str(kubernetes_validate.latest_version()))
    return list(dict.fromkeys([MINIMUM_KUBERNETES, TARGET_KUBERNETES, newest]))


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    template: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.body["metadata"].get("annotations") or {})

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.template})"


def values_cases() -> dict[str, dict[str, Any]]:
    """The values the chart is rendered with: its defaults, then each ci/*-values.yaml."""
    cases: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted(CI_VALUES.glob("*-values.yaml")):
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: values must be a mapping")
        cases[path.name.removesuffix("-values.yaml")] = loaded
    return cases


def render_files(
    values: Mapping[str, Any], *, chart: Path = CHART, upgrade: bool = False
) -> dict[str, str]:
    """Every template's output, by template path (NOTES.txt included), as ``helm template``."""
    with helm_python.Chart.load(chart) as loaded:
        return loaded.render(
            dict(values),
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )


def parse(files: Mapping[str, str]) -> list[Manifest]:
    manifests = []
    for template, text in sorted(files.items()):
        if template.endswith(".txt"):
            continue
        for body in yaml.safe_load_all(text):
            if body:
                manifests.append(Manifest(template, body))
    return manifests


def render(
    values: Mapping[str, Any], *, chart: Path = CHART, upgrade: bool = False
) -> list[Manifest]:
    return parse(render_files(values, chart=chart, upgrade=upgrade))


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Lines Helm's Go code writes straight to file descriptor 2 inside the block."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines += captured.read().decode(errors="replace").splitlines()


_LINT_FAIL = re.compile(r'funcMap fail message="(.*)"$')


def _unquote(quoted: str) -> str:
    """A Go-quoted string's text (JSON's escapes cover what Helm's messages use)."""
    try:
        return str(json.loads(f'"{quoted}"'))
    except ValueError:
        return quoted


def lint(values: Mapping[str, Any], *, chart: Path = CHART) -> list[str]:
    """``helm lint --strict`` findings above info level (the chart's icon is only a hint).

    In lint mode Helm does not stop at a template's ``fail``: it logs the message to stderr and
    goes on. Those messages are findings too.
    """
    with _native_stderr() as stderr:
        report = helm_python.lint(
            chart, dict(values), strict=True, kube_version=f"v{TARGET_KUBERNETES}.0"
        )
    findings = [
        f"{message['path']}: {message['error'].strip()}"
        for message in report["messages"]
        if message["severity"] >= 2
    ]
    findings += [error.strip() for error in report["errors"] if error.strip() not in findings]
    for line in stderr:
        match = _LINT_FAIL.search(line)
        if match:
            failure = f"template fail: {_unquote(match.group(1))}"
            if failure not in findings:
                findings.append(failure)
    return findings


_INTERVAL = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": _LABELS,
                "annotations": _LABELS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _INTERVAL,
                            "scrapeTimeout": _INTERVAL,
                            "honorLabels": {"type": "boolean"},
                            "metricRelabelings": {"type": "array"},
                            "relabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
"""The part of the Prometheus Operator's ServiceMonitor CRD schema the chart uses."""


def schema_problems(manifest: Manifest, version: str) -> list[str]:
    """Why ``manifest`` is not a valid object for Kubernetes ``version``; [] when it is."""
    if manifest.body.get("apiVersion") == "monitoring.coreos.com/v1":
        validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
        return [
            f"{manifest}: {'.'.join(map(str, error.path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(manifest.body)
        ]
    try:
        kubernetes_validate.validate(manifest.body, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(top)"
        return [f"{manifest}: Kubernetes {version}: {where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{manifest}: {error.message}"]
    return []


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """The pod template of every workload."""
    for manifest in manifests:
        if manifest.kind in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield manifest, manifest.body["spec"]["template"]["spec"]
