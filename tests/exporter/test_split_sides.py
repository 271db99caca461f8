"""GroupSplit places a row by its prompt's hash exactly as ``side_of`` does (it reuses one
keyed hash instead of keying one per row)."""

from __future__ import annotations

import random

import pytest

from exporter.split import GroupSplit, side_of


@pytest.mark.parametrize(("share", "salt"), [(0.1, "split-v1"), (0.5, "other"), (0.9, "s" * 80)])
def test_sides_by_hash_are_side_of(share: float, salt: str) -> None:
    rng = random.Random(share)
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(4000)]
    placed = GroupSplit(share, salt, None).sides(keys, [""] * len(keys))
    assert placed == [side_of(key, share, salt) for key in keys]
    assert 0 < placed.count("valid") < len(keys)
