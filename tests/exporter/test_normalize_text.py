"""A text's normal form (``exporter.normalize.text``) is its words case-folded and joined by
single spaces, whichever way it is found: printable ASCII already so spaced is only
lower-cased."""

from __future__ import annotations

import random
import unicodedata

from exporter import normalize

PARTS = ["word", "Word", "WORD", "a", "12", "don't", ".", "?!", "é", "ß", "日本", "\u00a0"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "\x00"]


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "a", " a", "a ", "a  b", "a b", "A\tB", "a\x1cb"]
    for _ in range(count):
        words = [rng.choice(PARTS) for _ in range(rng.randint(1, 12))]
        separators = [" " if rng.random() < 0.8 else rng.choice(SPACES) for _ in words]
        text = "".join(separator + word for separator, word in zip(separators, words, strict=True))
        text = text[1:] if rng.random() < 0.7 else text
        texts.append(text + rng.choice(SPACES) if rng.random() < 0.1 else text)
    return texts


def test_a_texts_normal_form_is_its_folded_words_single_spaced() -> None:
    normalize.text.cache_clear()
    for text in _texts(5000, seed=9):
        expected = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        assert normalize.text(text) == expected, repr(text)
