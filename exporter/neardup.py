"""Near-duplicate removal with MinHash LSH: the first of a group of near-identical examples
is kept, the later ones dropped.

Defaults: Jaccard threshold 0.8 over word 3-grams (shingles) of the normalised text, 128
permutations. The signatures are datasketch's ``MinHash`` values, computed for a whole page of
examples at once (``exporter.minhash``); the band layout (b bands of r rows) is the one
datasketch's ``MinHashLSH`` picks for the threshold with false negatives weighted 0.9.

The index is not datasketch's ``MinHashLSH``: that keeps a Python set per bucket and a list
of keys per example, about 1 KB per example, too much for millions of rows. Here each kept
example adds one 64-bit hash per band to sorted numpy runs, merged as they grow, and its
signature's values cut to 4 bits (64 bytes for 128 values). An example whose bands meet a kept
example's in some band is a candidate; it is a near duplicate when the 4-bit signatures'
estimated Jaccard reaches the threshold.

The per-text work (signatures, band keys) needs no index: ``sketches`` makes it, anywhere (the
export's worker processes do, for their pages), and ``keep_sketched`` / ``link_sketched`` take
it; ``keep`` and ``link`` do both.

The split's groups of similar prompts use the same index at a lower threshold: ``link`` says
which indexed texts each new one is similar to, and indexes them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from exporter import minhash
from exporter.minhash import Sketcher, Sketches, band_keys, band_layout

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

DEFAULT_THRESHOLD = 0.8
DEFAULT_NGRAM = 3
DEFAULT_NUM_PERM = 128

_LOW = np.uint64(0xFFFFFFFF)
_LARGEST_RUN = 1 << 21
"""Keys of the largest merged run (16 MB; a merge holds half its run again while it sorts):
beyond, runs stay apart, searched one by one. Runs of 4M keys spare ~2 points of an export's
CPU (py-spy) for ~25 MB more at its peak (the last merges)."""
_PRESENT_BITS = 26
"""8 MB of presence bits per index: about 1 in 4 set at 20 million keys (the split's 25 bands
of 800,000 prompts), 1 in 7 at the near-duplicates' 11 million, so a page's lookups mostly
stop there instead of searching every run. Each bit less doubles the share searched: at 25
bits the lookups' searches were 12.5% of an export's CPU, at 26 9.5%, at 27 7.4% (py-spy)."""


@dataclass(frozen=True, slots=True)
class NearDupOptions:
    threshold: float = DEFAULT_THRESHOLD
    ngram: int = DEFAULT_NGRAM
    num_perm: int = DEFAULT_NUM_PERM

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("the near-duplicate threshold must be between 0 and 1")
        if self.ngram < 1:
            raise ValueError("the n-gram size must be at least 1")
        if not 16 <= self.num_perm <= 1024:
            raise ValueError("the number of permutations must be between 16 and 1024")

    def sketcher(self) -> Sketcher:
        return Sketcher(self.ngram, self.num_perm)


class _Signatures:
    """Kept examples' small signatures (4 bits of each value, two to a byte: b-bit MinHash),
    in fixed blocks so growing never copies what is stored."""

    BLOCK = 1 << 16

    def __init__(self, width: int) -> None:
        self.width = width
        self.blocks: list[U8] = []
        self.size = 0

    def add(self, signatures: U8) -> None:
        for row in range(0, len(signatures), self.BLOCK):
            part = signatures[row : row + self.BLOCK]
            while len(part):
                used = self.size % self.BLOCK
                if used == 0:
                    self.blocks.append(np.empty((self.BLOCK, self.width), dtype=np.uint8))
                room = min(self.BLOCK - used, len(part))
                self.blocks[-1][used : used + room] = part[:room]
                self.size += room
                part = part[room:]

    def take(self, indices: npt.NDArray[np.int64]) -> U8:
        taken = np.empty((len(indices), self.width), dtype=np.uint8)
        block_of, within = np.divmod(indices, self.BLOCK)
        for block in np.unique(block_of):
            mask = block_of == block
            taken[mask] = self.blocks[int(block)][within[mask]]
        return taken


def similarity(left: U8, right: U8, values: int | None = None) -> npt.NDArray[np.float64]:
    """Jaccard estimated from small signatures (``minhash.small_signatures`` of ``values``
    values each; as many as their bytes hold by default), row by row, corrected for the chance
    that two different values share their low ``SMALL_BITS`` bits."""
    if values is None:
        values = left.shape[1] * 8 // minhash.SMALL_BITS
    chance = 1 / (1 << minhash.SMALL_BITS)
    share = minhash.small_agreements(left, right, values) / values
    estimate: npt.NDArray[np.float64] = np.clip((share - chance) / (1 - chance), 0.0, 1.0)
    return estimate


_CELL_BITS = 5
"""A run's directory has a cell per value of its keys' top ``bit_length(len(run)) - 5`` bits:
16 to 32 keys a cell on average, a directory of 1/8 to 1/4 byte a key (5 MB for the 37 million
keys of an export of a million calls). A page's lookups in 17 runs of the split's 25 million
keys took 31 ms with ``np.searchsorted``, 15.5 ms with cells of 8 to 16 keys, 16 ms with these,
18.7 ms with cells of 32 to 64 (most of it cache misses: each run is 14 MB)."""


@dataclass(frozen=True, slots=True)
class _Directory:
    """Where each cell of a sorted run starts (the keys whose top bits are the cell's number):
    a key's place in the run is then searched within its cell, a few keys, instead of the
    whole run (``np.searchsorted``'s ~21 steps over 2M keys, most of them a cache miss)."""

    starts: U32
    """``2**bits + 1`` places: cell ``c`` is ``run[starts[c] : starts[c + 1]]``."""
    shift: np.uint64
    """64 less the cell bits."""
    steps: int
    """The bit length of the largest cell's size: the steps of a search within a cell."""

    @classmethod
    def of(cls, run: U64) -> _Directory:
        bits = max(len(run).bit_length() - _CELL_BITS, 1)
        shift = np.uint64(64 - bits)
        # searched for rather than counted: no temporary the size of the run, made as the
        # largest merges peak
        firsts = np.arange(1 << bits, dtype=np.uint64) << shift
        starts = np.empty((1 << bits) + 1, dtype=np.uint32)
        starts[:-1] = np.searchsorted(run, firsts, "left")
        starts[-1] = len(run)
        return cls(starts, shift, int(np.diff(starts).max()).bit_length())

    def left(self, run: U64, keys: U64) -> npt.NDArray[np.intp]:
        """``np.searchsorted(run, keys, "left")``: for each key, how many keys of the run are
        below it (a binary search within its cell, for all the keys at once).

        A probe past its cell reads a later cell's key, above the key searched for (its top
        bits are larger), so a search needs no end of its cell; a probe past the run reads its
        last key, and a key above that one ends past the run, hence the final minimum."""
        low = self.starts[(keys >> self.shift).astype(np.intp)].astype(np.intp)
        if not len(run):
            return low
        last = len(run) - 1
        for bit in range(self.steps - 1, -1, -1):
            step = 1 << bit
            low += (run[np.minimum(low + (step - 1), last)] < keys) * step
        np.minimum(low, len(run), out=low)
        return low


@dataclass(frozen=True, slots=True)
class _Tagged:
    tagged: U64
    bucket: U64
    """``tagged`` without the text numbers."""
    text: npt.NDArray[np.int64]
    """The text numbers."""


class NearDuplicateIndex:
    """Kept examples' LSH bands and signatures; ``keep(texts)`` says which of a batch are new.

    Each band of a kept example is one uint64 in sorted runs: the band's 32-bit hash in the
    high half, the example's number in the low half, so one ``searchsorted`` finds every kept
    example in a bucket. A bucket hit is a candidate; it is a near duplicate when the
    signatures' estimated Jaccard reaches the threshold. The bands are laid out for recall
    (datasketch's optimum with false negatives weighted 0.9), since candidates are checked.
    """

    def __init__(self, options: NearDupOptions = NearDupOptions()) -> None:
        self.options = options
        self.bands, self.rows = band_layout(options.threshold, options.num_perm)
        self.sketcher = options.sketcher()
        self._runs: list[U64] = []
        self._directories: list[_Directory] = []
        """One per run."""
        self._kept = _Signatures(minhash.small_width(options.num_perm))
        self._present = np.zeros(1 << (_PRESENT_BITS - 3), dtype=np.uint8)
        """A bit per value of a band hash's top ``_PRESENT_BITS`` bits: set when some indexed
        key has it. Most of a page's keys find theirs clear and are not searched for."""

    @property
    def size(self) -> int:
        return self._kept.size

    def signatures(self, texts: Sequence[str]) -> U32:
        """One MinHash signature per text (rows); a text without words gets all-max values."""
        return self.sketcher.signatures(texts)

    def band_keys(self, signatures: U32) -> U64:
        return band_keys(signatures, self.bands, self.rows)

    def sketches(self, signatures: U32) -> Sketches:
        """What ``keep_sketched`` and ``link_sketched`` need of these signatures (computed
        anywhere: a worker process makes them for its page)."""
        return Sketches(minhash.small_signatures(signatures), self.band_keys(signatures))

    def _tagged(self, keys: U64) -> _Tagged:
        """The batch's band keys, each with its text's number in its low half, sorted: the
        one sort that finds the candidates, the pairs within the batch and the run to add."""
        numbers = np.repeat(np.arange(len(keys), dtype=np.uint64), self.bands)
        tagged = np.sort(keys.ravel() | numbers)
        return _Tagged(tagged, tagged & ~_LOW, (tagged & _LOW).astype(np.int64))

    def _candidates(self, batch: _Tagged) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(text, kept example) pairs that share a bucket, from the sorted runs.

        The batch's distinct keys whose presence bit is set are looked up in ascending order
        (each search then starts where the one before ended, in memory the cache already
        holds), once each, and only the keys found in a run are looked up again for the end
        of their bucket."""
        bucket = batch.bucket
        change = np.empty(len(bucket), dtype=bool)
        change[:1] = True
        np.not_equal(bucket[1:], bucket[:-1], out=change[1:])
        group = np.cumsum(change) - 1
        needles = bucket[change]
        texts: list[npt.NDArray[np.int64]] = []
        kept: list[npt.NDArray[np.int64]] = []
        probe = np.flatnonzero(self._maybe_present(needles))
        wanted = needles[probe]
        low = np.zeros(len(needles), dtype=np.intp)
        for run, directory in zip(self._runs, self._directories, strict=True):
            if not len(run):
                continue
            place = directory.left(run, wanted)
            # a key past the run's last is above it, and so is its bucket: no match there
            match = np.flatnonzero((run[np.minimum(place, len(run) - 1)] & ~_LOW) == wanted)
            if not len(match):
                continue
            found = probe[match]
            low[found] = place[match]
            high = directory.left(run, wanted[match] + _LOW)
            hits = np.zeros(len(needles), dtype=np.intp)
            hits[found] = high - place[match]
            per_key = hits[group]
            rows = np.repeat(np.arange(len(bucket)), per_key)
            step = np.arange(len(rows)) - np.repeat(np.cumsum(per_key) - per_key, per_key)
            texts.append(batch.text[rows])
            kept.append((run[low[group[rows]] + step] & _LOW).astype(np.int64))
        if not texts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(texts), np.concatenate(kept)

    @staticmethod
    def _pairs(batch: _Tagged, count: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(later, earlier) pairs of texts of one batch that share a bucket, each pair once,
        ordered by the later text, then the earlier."""
        bucket, text = batch.bucket, batch.text
        earlier: list[npt.NDArray[np.int64]] = []
        later: list[npt.NDArray[np.int64]] = []
        distance = 1
        while distance < len(bucket):
            same = np.flatnonzero(bucket[distance:] == bucket[:-distance])
            if not len(same):
                break
            earlier.append(text[same])
            later.append(text[same + distance])
            distance += 1
        if not earlier:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        first, second = np.concatenate(earlier), np.concatenate(later)
        apart = first != second  # two bands of one text may hash alike
        codes = np.unique(second[apart] * count + first[apart])
        return codes // count, codes % count

    def _close_pairs(
        self, small: U8, batch: _Tagged
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The batch's (later, earlier, estimated Jaccard) pairs that reach the threshold."""
        later, earlier = self._pairs(batch, len(small))
        close = similarity(small[earlier], small[later], self.options.num_perm)
        hit = close >= self.options.threshold
        return later[hit], earlier[hit], close[hit]

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """For each text in order: True if it is no near duplicate of a kept one (then it is
        kept and indexed), False if it is."""
        if not texts:
            return []
        return self.keep_sketched(self.sketches(self.signatures(texts)))

    def keep_sketched(self, sketches: Sketches) -> list[bool]:
        """``keep`` of the texts these sketches are of."""
        if not len(sketches):
            return []
        small = sketches.small
        batch = self._tagged(sketches.keys)
        duplicate = np.zeros(len(small), dtype=bool)
        pair_text, pair_kept = self._candidates(batch)
        if len(pair_text):
            close = similarity(small[pair_text], self._kept.take(pair_kept), self.options.num_perm)
            duplicate[pair_text[close >= self.options.threshold]] = True
        later, earlier, _ = self._close_pairs(small, batch)
        for text, other in zip(later.tolist(), earlier.tolist(), strict=True):
            if not duplicate[other]:  # kept: the batch's texts are decided in order
                duplicate[text] = True
        kept: list[bool] = (~duplicate).tolist()
        mask = ~duplicate
        if mask.any():
            # the kept texts numbered on from ``size`` in order: still sorted within a bucket
            number = (np.cumsum(mask) - 1 + self.size).astype(np.uint64)
            chosen = mask[batch.text]
            self._add(batch.bucket[chosen] | number[batch.text[chosen]])
            self._kept.add(small[mask])
        return kept

    def link(self, texts: Sequence[str]) -> list[list[int]]:
        """For each text in order: the numbers of the indexed texts (before this batch or
        earlier in it) whose estimated Jaccard reaches the threshold, most similar first.
        Every text is then indexed, numbered on from ``size`` in order."""
        if not texts:
            return []
        return self.link_sketched(self.sketches(self.signatures(texts)))

    def link_sketched(self, sketches: Sketches) -> list[list[int]]:
        """``link`` of the texts these sketches are of."""
        if not len(sketches):
            return []
        small = sketches.small
        batch = self._tagged(sketches.keys)
        found: list[dict[int, float]] = [{} for _ in range(len(small))]
        pair_text, pair_kept = self._candidates(batch)
        if len(pair_text):
            close = similarity(small[pair_text], self._kept.take(pair_kept), self.options.num_perm)
            hit = close >= self.options.threshold
            for text, other, value in zip(
                pair_text[hit].tolist(), pair_kept[hit].tolist(), close[hit].tolist(), strict=True
            ):
                found[text][other] = value
        later, earlier, close = self._close_pairs(small, batch)
        for text, other, value in zip(
            later.tolist(), (earlier + self.size).tolist(), close.tolist(), strict=True
        ):
            found[text][other] = value
        self._add(batch.tagged + np.uint64(self.size))  # numbered on from ``size``: sorted
        self._kept.add(small)
        return [
            sorted(near, key=lambda other: (-near[other], other)) if near else [] for near in found
        ]

    def _maybe_present(self, keys: U64) -> npt.NDArray[np.bool_]:
        prefixes = keys >> np.uint64(64 - _PRESENT_BITS)
        bits = self._present[prefixes >> np.uint64(3)] >> (prefixes & np.uint64(7)).astype(np.uint8)
        present: npt.NDArray[np.bool_] = (bits & 1).astype(bool)
        return present

    def _add(self, run: U64) -> None:
        """Size-tiered merging: about log2(n) runs, each key copied log2(n) times, up to
        ``_LARGEST_RUN`` keys a run (a merge needs half as much again as it makes)."""
        prefixes = run >> np.uint64(64 - _PRESENT_BITS)
        bits = np.left_shift(np.uint8(1), (prefixes & np.uint64(7)).astype(np.uint8))
        np.bitwise_or.at(self._present, (prefixes >> np.uint64(3)).astype(np.intp), bits)
        runs = self._runs
        runs.append(run)
        while (
            len(runs) > 1
            and len(runs[-1]) * 2 >= len(runs[-2])
            and len(runs[-1]) + len(runs[-2]) <= _LARGEST_RUN
        ):
            merge_last_two(runs)
        # the merges took runs from the end: those before the last are as they were
        del self._directories[len(runs) - 1 :]
        self._directories.append(_Directory.of(runs[-1]))


def merge_last_two(runs: list[U64]) -> None:
    """Replace the last two sorted runs of ``runs`` by their merge, with as little resident at
    once as numpy allows: the merged run is allocated untouched, each run is copied in and let
    go in turn, then sorted (a linear pass over two sorted runs, with a buffer of half the
    merged run). The largest merge of an export peaks at one and a half times the merged run,
    not two and a half (both runs, the merged one and the sort's buffer)."""
    left, size = len(runs[-2]), len(runs[-2]) + len(runs[-1])
    merged = np.empty(size, dtype=np.uint64)
    merged[:left] = runs[-2]
    del runs[-2]
    merged[left:] = runs[-1]
    del runs[-1]
    merged.sort(kind="stable")
    runs.append(merged)
