"""Generates gateway-overview.json, the gateway's Grafana dashboard, beside this file.

    python helm/gateway/dashboards/generate.py           # rewrite gateway-overview.json
    python helm/gateway/dashboards/generate.py --check   # exit 1 when the file is not this output

The JSON is what Grafana loads (import it in the UI, or provision it from a ConfigMap); this
script is its source, so edit here and regenerate: tests/helm/test_grafana_dashboard.py fails
when the two differ. Every query goes to the data source chosen in the ``DS_PROMETHEUS``
variable, so the same file works imported by hand and provisioned, with no ``__inputs`` step.
The ``route`` and ``variant`` variables (multi-select, "All" by default) filter every panel
that has those labels. The panels are built with ``grafana_json`` beside this file; this script
says what they show.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_json import (
    DATASOURCE,
    WINDOW,
    Layout,
    Panel,
    quantile,
    query_variable,
    rate,
    stat,
    targets,
    timeseries,
)

OUTPUT = Path(__file__).with_name("gateway-overview.json")
UID = "distillation-gateway-overview"
# Selectors: every series of the chosen routes and variants.
RV = 'route=~"$route", variant=~"$variant"'
R = 'route=~"$route"'
NOT_2XX = 'status!~"2.."'


def breaker_panel() -> Panel:
    states = {
        "0": {"color": "green", "index": 0, "text": "closed"},
        "1": {"color": "yellow", "index": 1, "text": "half-open"},
        "2": {"color": "red", "index": 2, "text": "open"},
    }
    return {
        "datasource": DATASOURCE,
        "description": "Circuit breaker per upstream model: closed (calls pass), open (the "
        "variant is skipped after consecutive failures), half-open (one probe call). The worst "
        "state over the gateway's replicas.",
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "mappings": [{"options": states, "type": "value"}],
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": "green", "value": None},
                        {"color": "yellow", "value": 1},
                        {"color": "red", "value": 2},
                    ],
                },
            },
            "overrides": [],
        },
        "options": {
            "alignValue": "center",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "mergeValues": True,
            "rowHeight": 0.8,
            "showValue": "auto",
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": targets(
            (
                "max by (provider, upstream_model) (gateway_breaker_state)",
                "{{provider}} / {{upstream_model}}",
            )
        ),
        "title": "Circuit breakers",
        "type": "state-timeline",
    }


def templating() -> dict[str, Any]:
    return {
        "list": [
            {
                "current": {},
                "hide": 0,
                "includeAll": False,
                "label": "Data source",
                "multi": False,
                "name": "DS_PROMETHEUS",
                "options": [],
                "query": "prometheus",
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
                "type": "datasource",
            },
            query_variable("route", "Route", "label_values(gateway_requests_total, route)"),
            query_variable(
                "variant",
                "Variant",
                'label_values(gateway_requests_total{route=~"$route"}, variant)',
            ),
        ]
    }


def panels() -> list[Panel]:
    lay = Layout()
    per_variant = "{{route}} / {{variant}}"
    requests = rate("gateway_requests_total", RV)
    errors = rate("gateway_requests_total", RV, extra=NOT_2XX)

    lay.row("At a glance")
    lay.add(
        stat("Calls/s", "Calls answered per second, all statuses.", "reqps", requests, None),
        4,
        4,
    )
    lay.add(
        stat(
            "Error share",
            "Share of calls answered with a status other than 2xx.",
            "percentunit",
            f"({errors} or vector(0)) / {requests}",
            0.05,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Latency p95",
            "95th percentile of the whole call at the gateway, to the last byte.",
            "s",
            quantile(0.95, "gateway_request_duration_seconds", RV, ""),
            None,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Gateway overhead p99",
            "99th percentile of the gateway's own time per call (total minus upstream wait).",
            "s",
            quantile(0.99, "gateway_overhead_seconds", R, ""),
            0.01,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Cost per hour",
            "USD per hour at the current rate, priced models only.",
            "currencyUSD",
            f"{rate('gateway_cost_usd_total', RV)} * 3600",
            None,
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Capture records dropped/s",
            "Capture records dropped because the writer's queue was full.",
            "cps",
            rate("gateway_capture_records_total", 'outcome="dropped"') + " or vector(0)",
            0.001,
        ),
        4,
        4,
    )

    lay.row("Traffic")
    lay.add(
        timeseries(
            "Request rate per variant",
            "Calls answered per second by route and variant (the variant that answered, after "
            "any fallback).",
            "reqps",
            targets((rate("gateway_requests_total", RV, "route, variant"), per_variant)),
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Error rate per variant (non-2xx share)",
            "Share of each variant's calls answered with a status other than 2xx, upstream "
            "errors passed through included.",
            "percentunit",
            targets(
                (
                    # A variant without errors has no non-2xx series: 0 for it, not a gap.
                    f"({rate('gateway_requests_total', RV, 'route, variant', NOT_2XX)}"
                    f" or {rate('gateway_requests_total', RV, 'route, variant')} * 0)"
                    f" / {rate('gateway_requests_total', RV, 'route, variant')}",
                    per_variant,
                ),
            ),
        ),
        12,
        8,
    )

    lay.row("Latency")
    for name, histogram, what in (
        ("Latency", "gateway_request_duration_seconds", "the whole call, to the last byte"),
        ("Time to first token", "gateway_time_to_first_token_seconds", "streamed calls only"),
    ):
        lay.add(
            timeseries(
                f"{name} p50 / p95 / p99 per variant",
                f"Percentiles of {what}, by route and variant.",
                "s",
                targets(
                    *(
                        (
                            quantile(q, histogram, RV, "route, variant"),
                            f"p{round(q * 100)} {per_variant}",
                        )
                        for q in (0.5, 0.95, 0.99)
                    )
                ),
            ),
            12,
            9,
        )
    lay.add(
        timeseries(
            "Upstream latency p50 / p95 per variant",
            "Time spent waiting on the upstream, all attempts of a call (for a stream: until "
            "its response headers).",
            "s",
            targets(
                *(
                    (
                        quantile(q, "gateway_upstream_duration_seconds", RV, "route, variant"),
                        f"p{round(q * 100)} {per_variant}",
                    )
                    for q in (0.5, 0.95)
                )
            ),
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Gateway overhead p50 / p99",
            "The gateway's own time per call: total minus the time waiting on the upstream.",
            "s",
            targets(
                *(
                    (
                        quantile(q, "gateway_overhead_seconds", R, "route"),
                        f"p{round(q * 100)} {{{{route}}}}",
                    )
                    for q in (0.5, 0.99)
                )
            ),
        ),
        12,
        8,
    )

    lay.row("Tokens and cost")
    lay.add(
        timeseries(
            "Tokens/s per variant",
            "Tokens per second as the upstream reported them, by kind (prompt, completion, "
            "cached).",
            "short",
            targets(
                (
                    rate("gateway_tokens_total", RV, "route, variant, kind"),
                    f"{per_variant} {{{{kind}}}}",
                )
            ),
            stack=True,
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Cost per hour per variant",
            "USD per hour at the current rate, from the price table (unpriced models excluded).",
            "currencyUSD",
            targets(
                (f"{rate('gateway_cost_usd_total', RV, 'route, variant')} * 3600", per_variant)
            ),
            stack=True,
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Cost per 1k calls per variant",
            "USD per thousand calls: how much cheaper a student answers the same route.",
            "currencyUSD",
            targets(
                (
                    rate("gateway_cost_usd_total", RV, "route, variant")
                    + " * 1000 / "
                    + rate("gateway_requests_total", RV, "route, variant", 'status=~"2.."'),
                    per_variant,
                )
            ),
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Unpriced calls/s",
            "Calls to upstream models with no known price: their cost is missing from the "
            "cost panels. Add them to capture.prices.",
            "reqps",
            targets(
                (
                    f"sum by (upstream_model) (rate(gateway_unpriced_calls_total{WINDOW}))",
                    "{{upstream_model}}",
                )
            ),
        ),
        6,
        8,
    )

    lay.row("Reliability")
    lay.add(
        timeseries(
            "Fallbacks and retries",
            "Fallbacks: calls answered by another variant than the one first chosen. Retries: "
            "attempts beyond the first on the same variant.",
            "cps",
            targets(
                (
                    rate(
                        "gateway_fallbacks_total",
                        R,
                        "route, from_variant, to_variant",
                        'to_variant=~"$variant"',
                    ),
                    "fallback {{route}}: {{from_variant}} -> {{to_variant}}",
                ),
                (
                    rate("gateway_retries_total", RV, "route, variant"),
                    f"retry {per_variant}",
                ),
            ),
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Upstream errors by kind",
            "Failed upstream attempts per second by provider and kind (timeout, unreachable, "
            "disconnected, status_429, status_5xx, stream_interrupted), retried ones included.",
            "cps",
            targets(
                (
                    f"sum by (provider, kind) (rate(gateway_upstream_errors_total{WINDOW}))",
                    "{{provider}} {{kind}}",
                )
            ),
            stack=True,
        ),
        8,
        8,
    )
    lay.add(breaker_panel(), 8, 8)

    lay.row("Shadow and capture")
    lay.add(
        timeseries(
            "Shadow calls by outcome",
            "Copies of live calls sent to a shadow variant: ok, error, or skipped (too many "
            "in flight).",
            "cps",
            targets(
                (
                    rate("gateway_shadow_calls_total", RV, "route, variant, outcome"),
                    f"{per_variant} {{{{outcome}}}}",
                )
            ),
            stack=True,
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Capture queue depth",
            "Capture records waiting to be written, per gateway instance. A queue that keeps "
            "growing means the database cannot keep up; when full, records are dropped.",
            "short",
            targets(
                ("sum by (instance) (gateway_capture_queue_depth)", "{{instance}}"),
            ),
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Capture records by outcome",
            "Capture records per second: written, dropped (queue full), retried, failed.",
            "cps",
            targets((rate("gateway_capture_records_total", "", "outcome"), "{{outcome}}")),
            overrides=[
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [
                        {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}
                    ],
                }
                for name, color in (("written", "green"), ("dropped", "red"), ("failed", "red"))
            ],
        ),
        8,
        8,
    )
    return lay.panels


def dashboard() -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "Distillation gateway: traffic, latency, cost and health per route and "
        "variant (teacher vs students), from the gateway's /metrics.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "liveNow": False,
        "panels": panels(),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["distillation-gateway", "llm"],
        "templating": templating(),
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "Distillation gateway",
        "uid": UID,
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
