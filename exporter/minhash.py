"""MinHash signatures of texts' word n-grams, for whole pages of texts at once with numpy.

A text's words are split on ASCII whitespace (the normalised texts the export compares have
single spaces only); each word gets a 32-bit hash (``word_hashes``: every word of a page in one
pass over the page's bytes) and each n-gram a hash of its words' hashes. A text shorter than
``ngram`` words has one shingle, all its words; an empty text none.

The signatures are datasketch's ``MinHash`` values (its seeded ``(a * x + b)`` permutations
over MurmurHash3's finalizer of each shingle hash): the test suite checks them against
datasketch value for value. The per-permutation minimum is taken over texts laid out as
columns of a matrix, texts of similar length together and each column padded with copies of
its own text's first shingle (which change no minimum), so each of the ``num_perm`` passes is
three flat vector operations instead of a ``reduceat`` over ragged runs.

``Sketcher.pair`` gives the near-duplicate text's signature and the prompt's together: the
prompt's words are the first words of the near-duplicate text (every message but the system
prompt; the prompt is every message but the system prompt and the answer), so the prompt's
n-grams are the first n-grams of the other and are permuted once, the near-duplicate
signature being the element-wise minimum of the prompt's and the rest's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
Index = npt.NDArray[np.intp]

SEED = 1
_MIX = np.uint32(0x9E3779B1)
_FMIX = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_FNV = np.uint64(0x100000001B3)
_SALT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)
_MAX = np.iinfo(np.uint32).max
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True
_BASE = 0x01000193
_LENGTH_MIX = np.uint32(0x85EBCA77)
_QUADRATURE = 96
"""Gauss-Legendre nodes, at least: n are exact for polynomials of degree up to 2n - 1, and the
integrands' degree is bands x rows, at most the permutations."""
_CELLS = 1 << 16
"""Matrix cells (shingles, padding included) permuted at once: 256 KB, in the CPU's cache."""


def fmix32(values: U32) -> U32:
    """MurmurHash3's finalizer, as datasketch applies it to every input hash."""
    shift1, mult1, shift2, mult2 = _FMIX
    values = values ^ (values >> shift1)
    values = values * mult1
    values = values ^ (values >> shift2)
    values = values * mult2
    return values ^ (values >> shift1)


class _Powers:
    """``_BASE**k`` and ``_BASE**-k`` modulo 2**32 for k below a length that grows on demand."""

    def __init__(self) -> None:
        self.forward: U32 = np.ones(0, dtype=np.uint32)
        self.inverse: U32 = np.ones(0, dtype=np.uint32)

    def upto(self, length: int) -> tuple[U32, U32]:
        if len(self.forward) < length:
            size = max(length, 2 * len(self.forward), 1 << 16)
            self.forward = _geometric(_BASE, size)
            self.inverse = _geometric(pow(_BASE, -1, 1 << 32), size)
        return self.forward, self.inverse


def _geometric(ratio: int, size: int) -> U32:
    steps = np.full(size, ratio, dtype=np.uint32)
    steps[0] = 1
    powers: U32 = np.cumprod(steps, dtype=np.uint32)  # wraps: modulo 2**32
    return powers


_POWERS = _Powers()


def word_hashes(texts: Sequence[str]) -> tuple[U32, Index]:
    """Every word's 32-bit hash, the texts' words concatenated in order, and each text's number
    of words (split on ASCII whitespace).

    A word's hash is the polynomial hash of its bytes modulo 2**32 (an odd base), its length
    mixed in and MurmurHash3's finalizer applied: for all the words of a page at once, from
    prefix sums of the bytes times powers of the base's inverse, with no Python call per word
    (a third of the time of CRC-32 word by word)."""
    encoded = [text.encode() for text in texts]
    data = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    space = _SPACE[data]
    word = ~space
    starts = np.flatnonzero(word[1:] & space[:-1]) + 1
    if word[0]:
        starts = np.concatenate([[0], starts])
    ends = np.flatnonzero(word[:-1] & space[1:]) + 1
    forward, inverse = _POWERS.upto(len(data))
    prefix = np.zeros(len(data) + 1, dtype=np.uint32)
    np.cumsum(data * inverse[: len(data)], dtype=np.uint32, out=prefix[1:])
    # the sum of byte_k * base**(k - start) over the word: the same wherever the word stands
    hashes = (prefix[ends] - prefix[starts]) * forward[starts]
    hashes ^= (ends - starts).astype(np.uint32) * _LENGTH_MIX
    # each text's words: those starting from its first byte on, before the next text's
    text_starts = np.cumsum([0, *(len(text) + 1 for text in encoded)])
    counts = np.diff(np.searchsorted(starts, text_starts, "left")).astype(np.intp)
    return fmix32(hashes.astype(np.uint32)), counts


def shingle_hashes(texts: Sequence[str], ngram: int) -> tuple[U32, Index]:
    """The 32-bit hashes of every text's word n-grams, concatenated, and each text's start.

    A text shorter than ``ngram`` words has one shingle, all its words; an empty text none.
    """
    hashes, lengths = word_hashes(texts)
    return _grams(hashes, lengths, ngram)


def _grams(hashes: U32, lengths: Index, ngram: int) -> tuple[U32, Index]:
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    starts = ends - lengths
    owner = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(total)
    remaining = ends[owner] - position
    padded = np.concatenate([hashes, np.zeros(ngram, dtype=np.uint32)])
    grams = np.zeros(total, dtype=np.uint32)
    for k in range(ngram):
        grams = grams * _MIX + np.where(k < remaining, padded[k : k + total], np.uint32(0))
    keep = (remaining >= ngram) | (position == starts[owner])
    counts = np.bincount(owner[keep], minlength=len(lengths))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    return grams[keep], offsets


def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that minimise 0.1 x the false-positive probability below the
    threshold plus 0.9 x the false-negative one above it (recall first: candidates are checked
    against the signatures): datasketch's ``MinHashLSH`` choice (``weights=(0.1, 0.9)``), its
    integrals taken by Gauss-Legendre quadrature, exact for these polynomials (the test suite
    compares the layouts with datasketch's)."""
    nodes, weights = np.polynomial.legendre.leggauss(max(_QUADRATURE, num_perm // 2 + 1))
    below = threshold / 2 * (nodes + 1)
    above = threshold + (1 - threshold) / 2 * (nodes + 1)
    best, chosen = float("inf"), (0, 0)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            caught_below = 1 - (1 - below**rows) ** bands
            missed_above = (1 - above**rows) ** bands
            false_positive = threshold / 2 * float(weights @ caught_below)
            false_negative = (1 - threshold) / 2 * float(weights @ missed_above)
            error = 0.1 * false_positive + 0.9 * false_negative
            if error < best:
                best, chosen = error, (bands, rows)
    return chosen


def permutations(num_perm: int, seed: int = SEED) -> tuple[U32, U32]:
    """datasketch's ``MinHash(num_perm, seed)`` permutations (its ``affine32`` scheme: odd
    ``a``, any ``b``, drawn from ``RandomState(seed)``)."""
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def band_keys(signatures: U32, bands: int, rows: int) -> U64:
    """(texts x bands) 32-bit hashes of each band's rows (salted by the band's number),
    in uint64 so that they can carry an example number in their low half."""
    wide = signatures.astype(np.uint64)
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(len(signatures), _SALT[band % len(_SALT)] + np.uint64(band))
        for column in range(band * rows, (band + 1) * rows):
            key = (key ^ wide[:, column]) * _FNV
        keys[:, band] = (key >> np.uint64(32)) << np.uint64(32)
    return keys


SMALL_BITS = 4
"""Bits kept of each signature value for checking candidates (b-bit MinHash, Li and Konig,
2010): 4, two values to a byte, or 8. Four bits estimate a Jaccard of 0.8 from 128 values
without bias and with a standard deviation of 0.037, eight bits 0.035 (``python -m
bench.minhash_bits`` simulates it): half the memory of every kept example's signature, 100 MB
of an export of a million calls. Eight is what the export kept before (with it, the export
writes what it wrote then: tests/exporter/test_export_identical.py)."""


def small_width(values: int) -> int:
    """Bytes of a small signature of ``values`` values."""
    return (values + 1) // 2 if SMALL_BITS == 4 else values


def small_signatures(signatures: U32) -> U8:
    """Each signature's values cut to their low ``SMALL_BITS`` bits (with 4, two to a byte, an
    odd count padded with a zero value that ``small_agreements`` discounts)."""
    if SMALL_BITS == 8:
        return (signatures & np.uint32(0xFF)).astype(np.uint8)
    low = (signatures & np.uint32(0xF)).astype(np.uint8)
    if low.shape[1] % 2:
        low = np.concatenate([low, np.zeros((len(low), 1), dtype=np.uint8)], axis=1)
    packed: U8 = low[:, 0::2] | (low[:, 1::2] << np.uint8(4))
    return packed


_NIBBLE = np.uint8(0xF)


def small_agreements(left: U8, right: U8, values: int) -> npt.NDArray[np.intp]:
    """How many of the ``values`` values agree, row by row, in two sets of small signatures."""
    if SMALL_BITS == 8:
        same: npt.NDArray[np.intp] = np.count_nonzero(left == right, axis=1)
        return same
    differ = left ^ right
    agree: npt.NDArray[np.intp] = np.count_nonzero((differ & _NIBBLE) == 0, axis=1)
    agree += np.count_nonzero((differ >> np.uint8(4)) == 0, axis=1)
    counted: npt.NDArray[np.intp] = agree - (2 * left.shape[1] - values)  # padding agrees
    return counted


@dataclass(frozen=True, slots=True)
class Sketches:
    """What an index needs of a batch of texts: their small signatures (``small_signatures``)
    and band keys."""

    small: U8
    keys: U64

    def __len__(self) -> int:
        return len(self.small)

    def take(self, mask: npt.NDArray[np.bool_] | Index) -> Sketches:
        return Sketches(self.small[mask], self.keys[mask])

    def placed(self, numbers: Sequence[int], count: int) -> Sketches:
        """These sketches as rows ``numbers`` of ``count`` (the other rows zero)."""
        small = np.zeros((count, self.small.shape[1]), dtype=np.uint8)
        keys = np.zeros((count, self.keys.shape[1]), dtype=np.uint64)
        small[numbers] = self.small
        keys[numbers] = self.keys
        return Sketches(small, keys)


class Sketcher:
    """MinHash signatures with ``num_perm`` permutations of word ``ngram``-grams."""

    def __init__(self, ngram: int, num_perm: int) -> None:
        self.ngram = ngram
        self.num_perm = num_perm
        self._a, self._b = permutations(num_perm)

    def signatures(self, texts: Sequence[str]) -> U32:
        """One signature per text (rows); a text without words gets all-max values."""
        grams, offsets = shingle_hashes(texts, self.ngram)
        counts = np.diff(np.append(offsets, len(grams)))
        return self._minima(fmix32(grams), offsets, counts)

    def pair(self, texts: Sequence[str], prefixes: Sequence[str]) -> tuple[U32, U32]:
        """The signatures of ``texts`` and of ``prefixes``, where each prefix's words are
        usually the first words of its text (when they are not, or the prefix is shorter
        than an n-gram, the prefix is hashed on its own)."""
        ngram = self.ngram
        hashes, lengths = word_hashes(texts)
        grams, offsets = _grams(hashes, lengths, ngram)
        mixed = fmix32(grams)
        counts = np.diff(np.append(offsets, len(grams)))
        prefix_words = np.fromiter(
            (len(prefix.encode().split()) for prefix in prefixes),
            dtype=np.intp,
            count=len(prefixes),
        )
        shared = np.fromiter(
            (
                words >= ngram and _starts_with(text, prefix)
                for text, prefix, words in zip(texts, prefixes, prefix_words.tolist(), strict=True)
            ),
            dtype=bool,
            count=len(texts),
        )
        head = np.where(shared, prefix_words - ngram + 1, 0)
        prefix_signatures = self._minima(mixed, offsets, head)
        signatures = np.minimum(
            prefix_signatures, self._minima(mixed, offsets + head, counts - head)
        )
        alone = np.flatnonzero(~shared)
        if len(alone):
            prefix_signatures[alone] = self.signatures([prefixes[i] for i in alone.tolist()])
        return signatures, prefix_signatures

    def _minima(self, mixed: U32, starts: Index, counts: Index) -> U32:
        """For each run ``mixed[start : start + count]``, its signature (all-max if empty)."""
        result = np.full((len(starts), self.num_perm), _MAX, dtype=np.uint32)
        docs = np.flatnonzero(counts > 0)
        if not len(docs):
            return result
        docs = docs[np.argsort(counts[docs], kind="stable")]
        first = 0
        while first < len(docs):
            last = first + 1
            while last < len(docs) and int(counts[docs[last]]) * (last - first + 1) <= _CELLS:
                last += 1
            chunk = docs[first:last]
            longest = int(counts[chunk[-1]])
            column = np.arange(longest)[:, None]
            where = starts[chunk][None, :] + np.where(column < counts[chunk][None, :], column, 0)
            shingles = mixed[where]  # (longest, texts): each column padded with its first
            permuted = np.empty_like(shingles)
            minima = np.empty((self.num_perm, len(chunk)), dtype=np.uint32)
            for row in range(self.num_perm):
                np.multiply(shingles, self._a[row], out=permuted)
                permuted += self._b[row]
                np.minimum.reduce(permuted, axis=0, out=minima[row])
            result[chunk] = minima.T
            first = last
        return result


def _starts_with(text: str, prefix: str) -> bool:
    return text.startswith(prefix) and (len(text) == len(prefix) or text[len(prefix)] == " ")
