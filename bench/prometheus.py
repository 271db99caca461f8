"""A gateway's /metrics read back: the Prometheus text exposition parsed into samples.

Enough of the format for the benchmarks' counters and gauges (names, labels, values; comments
and timestamps ignored), and the sums they read: a metric over the samples whose labels match,
the capture writer's outcome counters and queue depth.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MetricSample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[MetricSample]:
    """The samples of a Prometheus text exposition (comments skipped)."""
    out: list[MetricSample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        out.append(MetricSample(name, dict(_LABEL.findall(labels or "")), number))
    return out


def metric_sum(samples: list[MetricSample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def capture_counters(samples: list[MetricSample]) -> dict[str, float]:
    out = {
        outcome: metric_sum(samples, "gateway_capture_records_total", outcome=outcome)
        for outcome in ("written", "dropped", "retried", "failed")
    }
    out["queue_depth"] = metric_sum(samples, "gateway_capture_queue_depth")
    return out


def scrape(url: str) -> list[MetricSample]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return parse_metrics(response.read().decode())
