"""The page-at-once MinHash: words hashed alike wherever they stand, signatures equal to one
text at a time, and the paired prompt signatures equal to hashing the prompts on their own."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.minhash import Sketcher, shingle_hashes, word_hashes

WORDS = ["alpha", "beta", "gamma", "délta", "ε", "x", "a1", "{json:", "1}", "😀", "é"]


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def test_a_word_hashes_alike_wherever_it_stands() -> None:
    texts = ["alpha beta", "  beta\talpha\n", "", "gamma", "beta beta"]
    hashes, counts = word_hashes(texts)
    assert counts.tolist() == [len(text.encode().split()) for text in texts]
    words = [word for text in texts for word in text.encode().split()]
    by_word: dict[bytes, int] = {}
    for word, value in zip(words, hashes.tolist(), strict=True):
        assert by_word.setdefault(word, value) == value
    assert len(set(by_word.values())) == len(by_word)


def test_a_page_hashes_as_its_texts_one_by_one() -> None:
    rng = random.Random(3)
    texts = [_text(rng, 0, 40) for _ in range(300)]
    grams, offsets = shingle_hashes(texts, 3)
    ends = [*offsets[1:].tolist(), len(grams)]
    for row, text in enumerate(texts):
        alone, _ = shingle_hashes([text], 3)
        assert grams[offsets[row] : ends[row]].tolist() == alone.tolist(), text
    sketcher = Sketcher(3, 128)
    page = sketcher.signatures(texts)
    assert all(
        np.array_equal(page[row], sketcher.signatures([text])[0]) for row, text in enumerate(texts)
    )


def test_a_long_text_among_short_ones() -> None:
    texts = ["a b c", "word " * 70_000, "", "x y"]
    sketcher = Sketcher(3, 16)
    page = sketcher.signatures(texts)
    for row, text in enumerate(texts):
        assert np.array_equal(page[row], sketcher.signatures([text])[0])
    assert (page[2] == np.iinfo(np.uint32).max).all()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(WORDS), max_size=12),
            st.lists(st.sampled_from(WORDS), max_size=12),
            st.sampled_from(["", " ", "\t", "\u00a0", "x"]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_paired_signatures_equal_hashing_each_text(
    rows: list[tuple[list[str], list[str], str]],
) -> None:
    """A prompt is usually the first words of its text; the pair is exact when it is not."""
    texts, prefixes = [], []
    for head, tail, joint in rows:
        prefix = " ".join(head)
        prefixes.append(prefix)
        texts.append(prefix + (joint if joint else " ") + " ".join(tail) if tail else prefix)
    sketcher = Sketcher(3, 32)
    signatures, prefix_signatures = sketcher.pair(texts, prefixes)
    assert np.array_equal(signatures, sketcher.signatures(texts))
    assert np.array_equal(prefix_signatures, sketcher.signatures(prefixes))


def test_permutations_and_band_layouts_are_datasketchs() -> None:
    from datasketch import MinHash, MinHashLSH  # type: ignore[import-untyped]

    from exporter.minhash import band_layout, permutations

    for num_perm in (16, 64, 128):
        a, b = permutations(num_perm)
        expected = MinHash(num_perm=num_perm, seed=1).permutations
        assert a.tolist() == expected[0].tolist() and b.tolist() == expected[1].tolist()
        for step in range(1, 20):
            threshold = step / 20
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
            assert band_layout(threshold, num_perm) == (lsh.b, lsh.r), (threshold, num_perm)
