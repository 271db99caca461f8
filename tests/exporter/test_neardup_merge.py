"""The near-duplicate index's runs merge into what sorting them together gives, and the two
runs leave the list (so nothing holds them while the merge sorts)."""

from __future__ import annotations

import numpy as np

from exporter import neardup


def test_the_last_two_runs_become_their_sorted_keys() -> None:
    rng = np.random.default_rng(3)
    for left_size, right_size in [(0, 0), (0, 9), (9, 0), (40, 40), (3, 200), (200, 3), (501, 77)]:
        for spread in (5, 2**64 - 1):  # many equal keys, then nearly none
            left = np.sort(rng.integers(0, spread, left_size, dtype=np.uint64, endpoint=True))
            right = np.sort(rng.integers(0, spread, right_size, dtype=np.uint64, endpoint=True))
            first = np.arange(3, dtype=np.uint64)
            runs = [first, left, right]
            neardup.merge_last_two(runs)
            assert len(runs) == 2 and runs[0] is first
            assert runs[1].dtype == np.uint64
            assert np.array_equal(runs[1], np.sort(np.concatenate([left, right])))


def test_a_runs_directory_finds_where_searchsorted_does() -> None:
    rng = np.random.default_rng(5)
    for size in (1, 2, 3, 31, 32, 33, 1000, 70_000):
        for spread in (7, 2**40, 2**64 - 1):  # many equal keys, then nearly none
            run = np.sort(rng.integers(0, spread, size, dtype=np.uint64, endpoint=True))
            if spread < 2**64 - 1:
                run <<= np.uint64(64 - int(spread).bit_length())  # the top bits vary
            directory = neardup._Directory.of(run)
            keys = np.concatenate(
                [
                    run,
                    run + np.uint64(1),
                    run - np.uint64(1),  # wraps below the smallest
                    rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True),
                    np.array([0, 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=np.uint64),
                ]
            )
            assert np.array_equal(directory.left(run, keys), np.searchsorted(run, keys, "left"))
