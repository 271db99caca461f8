"""The fast /metrics rendering says exactly what prometheus-client's own would."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics


def samples(text: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    )


def families(text: bytes) -> dict[str, tuple[str, str]]:
    return {
        f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text.decode())
    }


def test_same_samples_as_generate_latest() -> None:
    metrics = Metrics()
    odd = 'route "with" quotes\\and\nnewline'
    for route in ("support", "gpt-4", odd):
        for variant in ("teacher", "student"):
            metrics.requests.labels(route, variant, "gpt-4o", "200").inc(3)
            metrics.duration.labels(route, variant).observe(0.7)
            metrics.duration.labels(route, variant).observe(12.0)
            metrics.tokens.labels(route, variant, "prompt").inc(120)
            metrics.cost.labels(route, variant).inc(0.0123)
        metrics.overhead.labels(route).observe(0.0004)
    metrics.capture_queue_depth.set(7)
    metrics.breaker_state.labels("openai", "gpt-4").set(2)
    fast, _ = metrics.render()
    reference = metrics.render_reference()
    assert samples(fast) == samples(reference)
    assert families(fast) == families(reference)
    assert metrics._fast.fallbacks == 0


def test_an_empty_registry_renders() -> None:
    metrics = Metrics()
    fast, content_type = metrics.render()
    assert samples(fast) == samples(metrics.render_reference())
    assert content_type.startswith("text/plain")
