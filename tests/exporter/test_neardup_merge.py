"""The near-duplicate index's runs merge into what sorting them together gives, on the
low-memory path (slices placed by searchsorted) as on the sort."""

from __future__ import annotations

import numpy as np
import pytest

from exporter import neardup


@pytest.mark.parametrize("slice_size", [1 << 20, 7])
def test_merged_runs_are_the_sorted_keys(monkeypatch: pytest.MonkeyPatch, slice_size: int) -> None:
    monkeypatch.setattr(neardup, "_MERGE_SLICE", slice_size)  # 7: every merge sliced
    rng = np.random.default_rng(slice_size)
    for left_size, right_size in [(0, 0), (0, 9), (9, 0), (40, 40), (3, 200), (200, 3), (501, 77)]:
        for spread in (5, 2**64 - 1):  # many equal keys, then nearly none
            left = np.sort(rng.integers(0, spread, left_size, dtype=np.uint64, endpoint=True))
            right = np.sort(rng.integers(0, spread, right_size, dtype=np.uint64, endpoint=True))
            merged = neardup.merge_sorted(left, right)
            assert merged.dtype == np.uint64
            assert np.array_equal(merged, np.sort(np.concatenate([left, right])))
