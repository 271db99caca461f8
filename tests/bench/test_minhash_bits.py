"""The simulation behind 4-bit signatures (bench/minhash_bits.py): the small signatures'
estimates are unbiased and decide as the whole values do, away from the threshold."""

from __future__ import annotations

from bench.minhash_bits import simulate


def test_four_bit_estimates_are_unbiased_and_decide_as_whole_values_do() -> None:
    rows = {(row.truth, row.bits): row for row in simulate(20_000, seed=7)}
    for (truth, bits), row in rows.items():
        whole = rows[(truth, "32 bits")]
        assert abs(row.mean - truth) < 0.003, (truth, bits)
        assert row.deviation < whole.deviation * 1.1, (truth, bits)
        for threshold, share in row.reaching.items():
            gap = abs(share - whole.reaching[threshold])
            assert gap < (0.015 if abs(truth - threshold) >= 0.1 else 0.06), (truth, bits)
