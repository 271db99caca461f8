"""Per-slice routing, pins, stickiness within a slice, counterfactual copies, their validation."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from router.config import RouteConfig
from router.sticky import pick
from router.table import COUNTERFACTUAL, Route

VARIANTS = {
    "teacher": {"provider": "p", "model": "gpt-4o", "weight": 100},
    "student": {"provider": "p", "model": "ft:mini", "weight": 0},
}


def route(**config: Any) -> Route:
    config.setdefault("variants", VARIANTS)
    return Route("gpt-4o", RouteConfig.model_validate(config))


def shares(r: Route, tags: dict[str, str] | None, n: int = 4000) -> Counter[str]:
    rng = random.Random(7)
    return Counter(r.plan(rng=rng, tags=tags).primary.variant for _ in range(n))


def test_a_matching_slice_is_split_by_its_own_weights() -> None:
    r = route(slices=[{"match": {"task": "a"}, "weights": {"teacher": 1, "student": 3}}])
    assert r.has_slices
    inside = shares(r, {"task": "a", "tenant": "x"})
    assert 0.70 < inside["student"] / 4000 < 0.80
    assert shares(r, {"task": "b"}) == Counter({"teacher": 4000})
    assert shares(r, None) == Counter({"teacher": 4000})
    assert shares(r, {}) == Counter({"teacher": 4000})


def test_every_match_pair_must_hold_and_the_first_slice_wins() -> None:
    r = route(
        slices=[
            {"match": {"task": "a", "tenant": "t1"}, "weights": {"student": 1}},
            {"match": {"task": "a"}, "weights": {"teacher": 1, "student": 0}},
            {"match": {"tenant": "t1"}, "weights": {"student": 1}},
        ]
    )
    assert r.slice_of({"task": "a", "tenant": "t1"}) == 0
    assert r.slice_of({"task": "a", "tenant": "t2"}) == 1
    assert r.slice_of({"task": "b", "tenant": "t1"}) == 2
    assert r.slice_of({"task": "b"}) is None
    assert shares(r, {"task": "a", "tenant": "t1"}) == Counter({"student": 4000})
    assert shares(r, {"task": "a", "tenant": "t2"}) == Counter({"teacher": 4000})


def test_a_pin_sends_the_whole_slice_to_one_variant() -> None:
    variants = {**VARIANTS, "student": {**VARIANTS["student"], "weight": 100}}
    r = route(variants=variants, slices=[{"match": {"task": "x"}, "weights": {"teacher": 5}}])
    assert shares(r, {"task": "x"}) == Counter({"teacher": 4000})
    assert len(shares(r, {"task": "y"})) == 2


def test_sticky_users_keep_their_variant_within_the_slice_weights() -> None:
    weights = {"teacher": 50, "student": 50}
    r = route(sticky="user", slices=[{"match": {"task": "a"}, "weights": weights}])
    for i in range(200):
        user = f"user-{i}"
        chosen = {r.plan(user, tags={"task": "a"}).primary.variant for _ in range(3)}
        assert chosen == {pick("gpt-4o", user, list(weights.items()))}
        # outside the slice the same user follows the default weights: all teacher
        assert r.plan(user, tags={"task": "b"}).primary.variant == "teacher"
    # raising the candidate's slice weight only moves users into it
    raised = route(
        sticky="user",
        slices=[{"match": {"task": "a"}, "weights": {"teacher": 50, "student": 80}}],
    )
    for i in range(200):
        before = r.plan(f"user-{i}", tags={"task": "a"}).primary.variant
        after = raised.plan(f"user-{i}", tags={"task": "a"}).primary.variant
        assert before == after or after == "student"


def test_a_forced_variant_ignores_slices() -> None:
    r = route(slices=[{"match": {"task": "a"}, "weights": {"student": 1}}])
    assert r.plan(forced="teacher", tags={"task": "a"}).primary.variant == "teacher"


def test_counterfactual_copies_a_sample_of_the_candidates_calls_to_the_incumbent() -> None:
    variants = {
        "teacher": {"provider": "p", "model": "gpt-4o", "weight": 50},
        "student": {"provider": "p", "model": "ft:mini", "weight": 50},
    }
    r = route(
        variants=variants, counterfactual={"of": "student", "variant": "teacher", "sample": 0.5}
    )
    rng = random.Random(3)
    plans = [r.plan(rng=rng) for _ in range(4000)]
    by_student = [p for p in plans if p.primary.variant == "student"]
    by_teacher = [p for p in plans if p.primary.variant == "teacher"]
    # the incumbent keeps its live share
    assert 0.45 < len(by_teacher) / 4000 < 0.55
    assert all(p.shadow is None and p.shadow_purpose is None for p in by_teacher)
    copied = [p for p in by_student if p.shadow is not None]
    assert 0.45 < len(copied) / len(by_student) < 0.55
    assert {(p.shadow.variant, p.shadow_purpose) for p in copied if p.shadow} == {
        ("teacher", COUNTERFACTUAL)
    }


def test_counterfactual_takes_the_shadow_slot_and_a_plain_shadow_has_no_purpose() -> None:
    variants = {
        "teacher": {"provider": "p", "model": "gpt-4o", "weight": 1},
        "student": {"provider": "p", "model": "ft:mini", "weight": 1},
        "next": {"provider": "p", "model": "ft:mini-2", "weight": 0},
    }
    r = route(
        variants=variants,
        shadow={"variant": "next"},
        counterfactual={"of": "student", "variant": "teacher"},
    )
    plan = r.plan(forced="student")
    assert plan.shadow is not None and plan.shadow.variant == "teacher"
    assert plan.shadow_purpose == COUNTERFACTUAL
    plan = r.plan(forced="teacher")
    assert plan.shadow is not None and plan.shadow.variant == "next"
    assert plan.shadow_purpose is None
    none = route(
        variants=variants, counterfactual={"of": "student", "variant": "teacher", "sample": 0}
    )
    assert none.plan(forced="student").shadow is None


def test_a_live_shadow_keeps_its_share_and_a_plain_one_does_not() -> None:
    variants = {
        "teacher": {"provider": "p", "model": "gpt-4o", "weight": 1},
        "student": {"provider": "p", "model": "ft:mini", "weight": 1},
    }
    plain = route(variants=variants, shadow={"variant": "student"})
    assert shares(plain, None) == Counter({"teacher": 4000})
    live = route(variants=variants, shadow={"variant": "student", "live": True})
    rng = random.Random(1)
    plans = [live.plan(rng=rng) for _ in range(2000)]
    assert {p.primary.variant for p in plans} == {"teacher", "student"}
    # copies only of what the other variant answers
    assert all(p.shadow is None for p in plans if p.primary.variant == "student")
    assert all(p.shadow is not None for p in plans if p.primary.variant == "teacher")


def test_routes_without_slices_ignore_tags() -> None:
    r = route()
    assert not r.has_slices
    assert r.plan(tags={"task": "a"}).primary.variant == "teacher"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"slices": [{"match": {"t": "a"}, "weights": {"ghost": 1}}]}, "unknown variant 'ghost'"),
        ({"slices": [{"match": {}, "weights": {"teacher": 1}}]}, "at least 1 item"),
        ({"slices": [{"match": {"t": "a"}, "weights": {"teacher": -1}}]}, "must be >= 0"),
        ({"slices": [{"match": {"t": "a"}, "weights": {"teacher": 0}}]}, "weight above 0"),
        ({"slices": [{"match": {"t": "a"}, "weights": {}}]}, "at least 1 item"),
        ({"slices": [{"match": {"t": "a"}, "weight": {"teacher": 1}}]}, "Extra inputs"),
        (
            {
                "shadow": {"variant": "student"},
                "slices": [{"match": {"t": "a"}, "weights": {"student": 1}}],
            },
            "besides the shadow",
        ),
        ({"counterfactual": {"of": "student", "variant": "ghost"}}, "unknown variant 'ghost'"),
        ({"counterfactual": {"of": "teacher", "variant": "teacher"}}, "must differ"),
        ({"counterfactual": {"of": "student", "variant": "teacher", "sample": 2}}, "less than"),
    ],
)
def test_invalid_slices_and_counterfactuals_are_refused(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RouteConfig.model_validate({"variants": VARIANTS, **extra})
