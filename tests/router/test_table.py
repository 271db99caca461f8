from __future__ import annotations

import random
from collections import Counter

import pytest

from router.config import RouteConfig, VariantConfig
from router.table import Route, RouteTable, Variant


def test_single_variant_route_always_answers_with_it() -> None:
    table = RouteTable.from_config(
        {
            "gpt-4": RouteConfig(
                variants={"teacher": VariantConfig(provider="p", model="gpt-4-0613")}
            )
        }
    )
    route = table.get("gpt-4")
    assert route is not None
    decision = route.choose()
    assert (decision.route, decision.variant, decision.provider, decision.upstream_model) == (
        "gpt-4",
        "teacher",
        "p",
        "gpt-4-0613",
    )
    assert table.get("gpt-5") is None
    assert table.names() == ["gpt-4"]


def test_weights_split_traffic_and_zero_is_idle() -> None:
    route = Route(
        "r",
        [Variant("a", "p", "m1", 90), Variant("b", "p", "m2", 10), Variant("idle", "p", "m3", 0)],
    )
    rng = random.Random(42)
    counts = Counter(route.choose(rng).variant for _ in range(20_000))
    assert counts["idle"] == 0
    assert abs(counts["b"] / 20_000 - 0.10) < 0.015


def test_a_route_needs_an_active_variant() -> None:
    with pytest.raises(ValueError, match="no variant"):
        Route("r", [Variant("a", "p", "m", 0)])
