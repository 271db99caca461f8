"""The exact-duplicate keys in sorted runs answer as a Python set does, batch by batch."""

from __future__ import annotations

import random

import numpy as np

from exporter.seen import SeenKeys


def test_first_seen_is_a_set_s_answer_in_order() -> None:
    rng = random.Random(4)
    seen, reference = SeenKeys(), set()
    for batch_size in [0, 1, 5, 1000, 3, 700, 2000, 0, 50] * 4:
        keys = [rng.choice((rng.getrandbits(64), rng.randrange(3000))) for _ in range(batch_size)]
        expected = []
        for key in keys:
            expected.append(key not in reference)
            reference.add(key)
        answer = seen.first_seen(np.array(keys, dtype=np.uint64))
        assert answer.tolist() == expected
    assert seen.size == len(reference)
    assert 1 < len(seen._runs) < 12
