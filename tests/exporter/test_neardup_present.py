"""The index's presence bits only spare lookups: the candidates found are those of searching
every run for every key."""

from __future__ import annotations

import random

import numpy as np

from exporter.neardup import NearDuplicateIndex, NearDupOptions


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    texts: list[str] = []
    for _ in range(count):
        if texts and rng.random() < 0.4:
            edited = rng.choice(texts).split()
            edited[rng.randrange(len(edited))] = rng.choice(words)
            texts.append(" ".join(edited))
        else:
            texts.append(" ".join(rng.choices(words, k=rng.randint(3, 30))))
    return texts


def test_presence_bits_change_no_candidate() -> None:
    for threshold in (0.8, 0.6):
        index = NearDuplicateIndex(NearDupOptions(threshold=threshold))
        texts = _texts(3000, seed=int(threshold * 10))
        for start in range(0, 2400, 300):
            index.link(texts[start : start + 300])
        keys = index.band_keys(index.signatures(texts[2400:]))
        filtered = index._candidates(index._tagged(keys))
        assert 0 < np.count_nonzero(index._present) < len(index._present)
        index._present[:] = 0xFF
        everything = index._candidates(index._tagged(keys))
        pairs = sorted(zip(*(part.tolist() for part in filtered), strict=True))
        assert pairs == sorted(zip(*(part.tolist() for part in everything), strict=True))
        assert len(pairs) > 100
