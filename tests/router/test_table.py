from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from router.config import RouteConfig
from router.table import Route, RouteTable, UnknownVariant


def route(name: str = "gpt-4", **config: Any) -> Route:
    config.setdefault(
        "variants",
        {
            "teacher": {"provider": "p", "model": "gpt-4", "weight": 90},
            "student": {"provider": "p", "model": "ft:gpt-3.5-turbo:acme::1", "weight": 10},
        },
    )
    return Route(name, RouteConfig.model_validate(config))


def test_single_variant_route_always_answers_with_it() -> None:
    table = RouteTable.from_config(
        {
            "gpt-4": RouteConfig.model_validate(
                {
                    "variants": {"teacher": {"provider": "p", "model": "gpt-4-0613"}},
                    "aliases": ["gpt-4-0613", "gpt-4-latest"],
                }
            )
        }
    )
    found = table.get("gpt-4")
    assert found is not None
    decision = found.choose()
    assert (decision.route, decision.variant, decision.provider, decision.upstream_model) == (
        "gpt-4",
        "teacher",
        "p",
        "gpt-4-0613",
    )
    assert table.get("gpt-4-latest") is found
    assert table.get("gpt-5") is None
    assert table.names() == ["gpt-4", "gpt-4-0613", "gpt-4-latest"]


def test_weights_split_traffic_and_zero_is_idle() -> None:
    r = route(
        variants={
            "a": {"provider": "p", "model": "m1", "weight": 90},
            "b": {"provider": "p", "model": "m2", "weight": 10},
            "idle": {"provider": "p", "model": "m3", "weight": 0},
        }
    )
    rng = random.Random(42)
    counts = Counter(r.choose(rng=rng).variant for _ in range(20_000))
    assert counts["idle"] == 0
    assert abs(counts["b"] / 20_000 - 0.10) < 0.015


def test_sticky_routes_hash_the_user_and_others_do_not() -> None:
    sticky = route(sticky="user")
    assert len({sticky.choose("user-7").variant for _ in range(50)}) == 1
    loose = route(
        variants={
            "a": {"provider": "p", "model": "m1", "weight": 1},
            "b": {"provider": "p", "model": "m2", "weight": 1},
        }
    )
    assert len({loose.choose("user-7").variant for _ in range(200)}) == 2


def test_forced_variant_even_when_idle() -> None:
    r = route(
        variants={
            "teacher": {"provider": "p", "model": "gpt-4", "weight": 1},
            "candidate": {"provider": "p", "model": "ft:x", "weight": 0},
        }
    )
    assert r.plan(forced="candidate").primary.variant == "candidate"
    with pytest.raises(UnknownVariant):
        r.plan(forced="nope")


def test_plan_has_fallbacks_without_the_primary() -> None:
    r = route(fallbacks=["student", "teacher"])
    plan = r.plan(forced="teacher")
    assert [d.variant for d in plan.chain()] == ["teacher", "student"]
    plan = r.plan(forced="student")
    assert [d.variant for d in plan.chain()] == ["student", "teacher"]


def test_shadow_is_sampled_and_never_the_primary() -> None:
    r = route(
        variants={
            "teacher": {"provider": "p", "model": "gpt-4", "weight": 1},
            "student": {"provider": "p", "model": "ft:x", "weight": 5},
        },
        shadow={"variant": "student", "sample": 0.2},
    )
    rng = random.Random(1)
    plans = [r.plan(rng=rng) for _ in range(5_000)]
    assert all(p.primary.variant == "teacher" for p in plans)  # the shadow takes no live share
    share = sum(p.shadow is not None for p in plans) / len(plans)
    assert abs(share - 0.2) < 0.02
    assert r.plan(forced="student").shadow is None


def test_configuration_mistakes() -> None:
    with pytest.raises(ValueError, match="unknown variant 'ghost'"):
        route(fallbacks=["ghost"])
    with pytest.raises(ValueError, match="besides the shadow"):
        route(
            variants={"s": {"provider": "p", "model": "m", "weight": 1}},
            shadow={"variant": "s"},
        )
