"""The exact-duplicate keys seen so far: 8 bytes each in sorted numpy runs, not a Python set.

A set of a million 64-bit keys takes about 70 MB (an int object and a slot for each); the
runs take 8 MB, merged as they grow like the near-duplicate index's (``neardup.merge_last_two``).
Keys are looked up a page at a time: ``first_seen`` says which of a batch are new, in order
(a key twice in one batch is new the first time only), and remembers them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from exporter.neardup import merge_last_two

U64 = npt.NDArray[np.uint64]


class SeenKeys:
    def __init__(self) -> None:
        self._runs: list[U64] = []
        self.size = 0

    def first_seen(self, keys: U64) -> npt.NDArray[np.bool_]:
        """For each key in order: True if neither remembered nor earlier in ``keys``."""
        new = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return new
        _, first = np.unique(keys, return_index=True)
        new[first] = True
        for run in self._runs:
            places = np.searchsorted(run, keys)
            inside = places < len(run)
            found = np.zeros(len(keys), dtype=bool)
            found[inside] = run[places[inside]] == keys[inside]
            new &= ~found
        fresh = np.sort(keys[new])
        if len(fresh):
            self.size += len(fresh)
            self._runs.append(fresh)
            while len(self._runs) > 1 and len(self._runs[-1]) * 2 >= len(self._runs[-2]):
                merge_last_two(self._runs)
        return new
