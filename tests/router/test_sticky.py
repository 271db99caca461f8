from __future__ import annotations

from collections import Counter

import pytest

from router.sticky import pick, unit_hash

USERS = [f"user-{i}" for i in range(20_000)]


@pytest.mark.parametrize("weights", [(95, 5), (50, 50), (70, 20, 10), (1, 1, 1, 1)])
def test_split_follows_the_weights(weights: tuple[int, ...]) -> None:
    variants = [(f"v{i}", w) for i, w in enumerate(weights)]
    counts = Counter(pick("support", user, variants) for user in USERS)
    total = sum(weights)
    for name, weight in variants:
        assert abs(counts[name] / len(USERS) - weight / total) < 0.015


def test_a_ramp_only_moves_users_into_the_growing_variant() -> None:
    before = {u: pick("support", u, [("teacher", 95), ("student", 5)]) for u in USERS}
    after = {u: pick("support", u, [("teacher", 50), ("student", 50)]) for u in USERS}
    assert all(after[u] == "student" for u in USERS if before[u] == "student")
    moved = sum(before[u] != after[u] for u in USERS)
    assert 0.40 < moved / len(USERS) < 0.50


def test_three_variants_ramping_one_leaves_the_others_alone() -> None:
    before = {u: pick("r", u, [("a", 60), ("b", 30), ("c", 10)]) for u in USERS}
    after = {u: pick("r", u, [("a", 60), ("b", 30), ("c", 40)]) for u in USERS}
    for user in USERS:
        assert after[user] in (before[user], "c")


def test_pure_function_of_route_user_and_weights() -> None:
    variants = [("a", 1), ("b", 1)]
    assert [pick("r", u, variants) for u in USERS[:100]] == [
        pick("r", u, variants) for u in USERS[:100]
    ]
    assert 0.0 < unit_hash("r", "u", "v") < 1.0
    # Another route's assignment is independent.
    same = sum(pick("r1", u, variants) == pick("r2", u, variants) for u in USERS)
    assert 0.45 < same / len(USERS) < 0.55
    with pytest.raises(ValueError):
        pick("r", "u", [("a", 0)])
