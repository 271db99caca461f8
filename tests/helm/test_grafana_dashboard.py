"""The Grafana dashboard in helm/gateway/dashboards: valid JSON that Grafana loads, queries that
name only metrics and labels the gateway exports, and the file equal to its generator's output."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import MULTIPROCESS_ENV, Metrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "helm" / "gateway" / "dashboards"
DASHBOARD = DASHBOARDS / "gateway-overview.json"
GENERATOR = DASHBOARDS / "generate.py"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
REQUIRED_KEYS = {
    "annotations",
    "editable",
    "panels",
    "schemaVersion",
    "templating",
    "time",
    "title",
    "uid",
    "version",
}
# Panel types Grafana 10/11 ships (core panels).
KNOWN_PANEL_TYPES = {
    "barchart",
    "bargauge",
    "candlestick",
    "dashlist",
    "gauge",
    "heatmap",
    "histogram",
    "logs",
    "news",
    "nodeGraph",
    "piechart",
    "row",
    "stat",
    "state-timeline",
    "status-history",
    "table",
    "text",
    "timeseries",
    "trend",
    "xychart",
}
# Grafana's own variables, valid in any query.
GRAFANA_VARIABLES = {
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__range",
    "__range_s",
    "__range_ms",
    "__dashboard",
    "__from",
    "__to",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
_METRIC_NAME = re.compile(r"\bgateway_[a-z0-9_]+\b")
# Sample suffixes prometheus-client exposes for each kind of metric.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def exported_metrics() -> dict[str, set[str]]:
    """Every sample name the gateway can expose, with the labels its series carry."""
    metrics = Metrics()
    assert not metrics.multiprocess, f"unset {MULTIPROCESS_ENV} to run these tests"
    out: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        labels = set(collector._labelnames)  # no public accessor for a family's label names
        for family in collector.describe():
            for suffix in SUFFIXES[family.type]:
                out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for _, target in queries(dashboard)]


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out.append(query["query"] if isinstance(query, dict) else query)
    return out


def substitute(expr: str) -> str:
    """The query as Prometheus receives it, with example values for Grafana's variables."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    expr = expr.replace("$__range", "1h")
    return _VARIABLE.sub("x", expr)


# ----------------------------------------------------------------------------- structure


def test_the_file_is_the_generators_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DASHBOARDS))  # as when run: its modules beside it
    spec = importlib.util.spec_from_file_location("dashboard_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text(encoding="utf-8") == module.render(), (
        "helm/gateway/dashboards/gateway-overview.json is out of date: run "
        "python helm/gateway/dashboards/generate.py"
    )


def test_top_level(dashboard: dict[str, Any]) -> None:
    assert set(dashboard) >= REQUIRED_KEYS
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["version"], int)
    assert set(dashboard["time"]) == {"from", "to"}
    assert isinstance(dashboard["annotations"]["list"], list)
    # An exported dashboard's id belongs to the Grafana it came from: none here.
    assert dashboard.get("id") is None


def test_panels_have_unique_ids_known_types_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard):
        title = panel.get("title", panel["id"])
        assert panel["type"] in KNOWN_PANEL_TYPES, title
        grid = panel["gridPos"]
        assert set(grid) >= {"h", "w", "x", "y"}, title
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), title
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, title
        # No two panels on the same cell.
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{title} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            assert "targets" not in panel, title
            continue
        assert panel.get("title"), panel["id"]
        targets = panel.get("targets")
        assert targets, f"{title} has no query"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), title
        for target in targets:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), title


def test_datasource_references_are_consistent(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["DS_PROMETHEUS"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    # No import-time inputs: the file also works provisioned from a ConfigMap.
    assert "__inputs" not in dashboard


def test_route_and_variant_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("route", "variant"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["multi"] and variable["includeAll"]
        assert variable["allValue"] == ".*"
        assert variable["definition"] == variable["query"]["query"]
        assert re.fullmatch(
            rf"label_values\(gateway_\w+(\{{.*\}})?, {name}\)", variable["definition"]
        )


def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_VARIABLES
    used: set[str] = set()
    for expr in [*exprs(dashboard), *variable_queries(dashboard)]:
        for match in _VARIABLE.finditer(expr):
            used.add(next(group for group in match.groups() if group))
    assert {"route", "variant", "__rate_interval"} <= used
    assert used <= defined, used - defined
    # Multi-value variables expand to a regex: they must be matched with =~.
    for expr in exprs(dashboard):
        for label in ("route", "variant"):
            assert f'{label}="$' not in expr, expr


def test_brackets_balance(dashboard: dict[str, Any]) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    for expr in [*exprs(dashboard), *variable_queries(dashboard)]:
        stack: list[str] = []
        in_string = False
        for char in expr:
            if char == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif char in "([{":
                stack.append(char)
            elif char in pairs:
                assert stack and stack.pop() == pairs[char], expr
        assert not stack and not in_string, expr


# ----------------------------------------------------------------------------- metrics


def test_every_metric_name_is_exported_by_the_gateway(dashboard: dict[str, Any]) -> None:
    exported = exported_metrics()
    assert "gateway_requests_total" in exported
    assert "gateway_request_duration_seconds_bucket" in exported
    used = set()
    for expr in [*exprs(dashboard), *variable_queries(dashboard)]:
        used |= set(_METRIC_NAME.findall(expr))
    assert used, "no gateway metric in any query"
    assert used <= set(exported), sorted(used - set(exported))


def test_the_dashboard_covers_the_metrics(dashboard: dict[str, Any]) -> None:
    text = "\n".join(exprs(dashboard))
    for name in (
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_time_to_first_token_seconds_bucket",
        "gateway_upstream_duration_seconds_bucket",
        "gateway_overhead_seconds_bucket",
        "gateway_tokens_total",
        "gateway_cost_usd_total",
        "gateway_unpriced_calls_total",
        "gateway_upstream_errors_total",
        "gateway_retries_total",
        "gateway_fallbacks_total",
        "gateway_breaker_state",
        "gateway_shadow_calls_total",
        "gateway_capture_queue_depth",
        "gateway_capture_records_total",
    ):
        assert name in text, name
    for histogram in ("gateway_request_duration_seconds", "gateway_time_to_first_token_seconds"):
        for q in ("0.5", "0.95", "0.99"):
            pattern = (
                rf"histogram_quantile\({q}, sum by \(le, route, variant\) "
                rf"\(rate\({histogram}_bucket\{{"
            )
            assert re.search(pattern, text), (histogram, q)
    for q in ("0.5", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, route) (rate(gateway_overhead" in text
    titles = " | ".join(panel.get("title", "") for panel in all_panels(dashboard)).lower()
    for words in (
        "request rate",
        "error rate",
        "latency",
        "time to first token",
        "overhead",
        "tokens/s",
        "cost per hour",
        "fallbacks",
        "retries",
        "breaker",
        "shadow",
        "capture queue",
        "capture records",
    ):
        assert words in titles, words


def _vector_selectors(expr: str) -> Iterator[Any]:
    promql_parser = pytest.importorskip("promql_parser")
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(substitute(expr)), visit)
    yield from found


def _groupings(tree: Any) -> list[set[str]]:
    """The ``by (...)`` labels of every aggregation in ``tree``, outermost first."""
    promql_parser = pytest.importorskip("promql_parser")
    kept: list[set[str]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            kept.append(set(node.modifier.labels))

    promql_parser.walk(tree, visit)
    return kept


def test_every_query_parses_and_uses_labels_the_metric_has(dashboard: dict[str, Any]) -> None:
    promql_parser = pytest.importorskip("promql_parser")
    exported = exported_metrics()
    for title, target in queries(dashboard):
        try:
            tree = promql_parser.parse(substitute(target["expr"]))
        except ValueError as exc:
            pytest.fail(f"{title}: {target['expr']}: {exc}")
        selectors = list(_vector_selectors(target["expr"]))
        assert selectors, title
        available: set[str] = set()
        for selector in selectors:
            assert selector.name in exported, (title, selector.name)
            labels = exported[selector.name]
            available |= labels
            for matcher in selector.matchers.matchers:
                assert matcher.name in labels, (title, selector.name, matcher.name)
        # Labels kept by an aggregation, and those the legend shows, exist on the metric.
        kept = _groupings(tree)
        for group in kept:
            assert group <= available | {"instance", "job"}, (title, group - available)
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        outer = kept[0] if kept else available
        assert legend <= outer | {"instance", "job"}, (title, legend - outer)


def test_variable_queries_parse(dashboard: dict[str, Any]) -> None:
    promql_parser = pytest.importorskip("promql_parser")
    exported = exported_metrics()
    for query in variable_queries(dashboard):
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        tree = promql_parser.parse(substitute(selector))
        assert isinstance(tree, promql_parser.VectorSelector), query
        assert tree.name in exported and label in exported[tree.name], query
