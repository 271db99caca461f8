"""Train/validation split by a hash of the prompt, and by groups of similar prompts.

The same prompt (system messages aside) always lands on the same side, so no validation
prompt was trained on, and a re-export of a grown store keeps every old row where it was:
the side depends on the prompt and the salt only, never on what else was selected.

Prompts that are similar but not near-duplicates (they survive deduplication) would be
placed by their own hashes, so a lightly edited prompt could be trained on while its twin
is validated on, and the valid loss would partly measure memorisation. ``GroupSplit``
therefore places rows by group: a prompt whose estimated word 3-gram Jaccard with an
earlier prompt reaches the group threshold (default 0.6, below the near-duplicate one, with
the same MinHash machinery) joins that prompt's group and takes its side; a group's side is
the hash side of its first prompt. Rows are placed as they stream, in selection order
(oldest first), so a re-export of a grown store still keeps every old row where it was. A
new prompt similar to groups on both sides joins the side of the most similar one and
merges them: the rows already written cannot move, so such groups are counted as split.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from typing import Any, Literal

from exporter.minhash import Sketches
from exporter.neardup import NearDuplicateIndex, NearDupOptions

Side = Literal["train", "valid"]
DEFAULT_VALID_SHARE = 0.1
DEFAULT_SALT = "split-v1"
DEFAULT_GROUP_THRESHOLD = 0.6
LARGE_GROUP_SHARE = 0.1
"""A group holding more than this share of the rows is worth a warning: shared templates?"""


def share_of(prompt_key: bytes, salt: str = DEFAULT_SALT) -> float:
    """Where the prompt falls in [0, 1), uniformly."""
    digest = hashlib.blake2b(prompt_key, digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def side_of(
    prompt_key: bytes, valid_share: float = DEFAULT_VALID_SHARE, salt: str = DEFAULT_SALT
) -> Side:
    return "valid" if share_of(prompt_key, salt) < valid_share else "train"


def group_options(threshold: float) -> NearDupOptions:
    """The grouping's MinHash settings: the near-duplicate defaults at a lower threshold."""
    return NearDupOptions(threshold=threshold)


class Sides:
    """``side_of(prompt_key, valid_share, salt)`` from a copy of the keyed hash (keying it
    costs a block of hashing, per row): True for the validation side."""

    def __init__(self, valid_share: float = DEFAULT_VALID_SHARE, salt: str = DEFAULT_SALT) -> None:
        self.valid_share = valid_share
        self._keyed = hashlib.blake2b(digest_size=8, key=salt.encode()[:64])

    def __call__(self, prompt_key: bytes) -> bool:
        hasher = self._keyed.copy()
        hasher.update(prompt_key)
        return int.from_bytes(hasher.digest(), "big") / 2.0**64 < self.valid_share


class GroupSplit:
    """Sides for a stream of rows, by group of similar prompts (``None`` options: each row by
    its own prompt's hash only).

    Memory per row: the index's bands and 8-bit signature (about 200 bytes at 0.6), and 9
    bytes of group bookkeeping.
    """

    def __init__(
        self,
        valid_share: float = DEFAULT_VALID_SHARE,
        salt: str = DEFAULT_SALT,
        groups: NearDupOptions | None = None,
    ) -> None:
        self.valid_share = valid_share
        self.salt = salt
        self.index = NearDuplicateIndex(groups) if groups is not None else None
        self.own_side = Sides(valid_share, salt)
        self._parent = array("q")
        self._size = array("I")
        self._valid = bytearray()
        self.placed = 0
        self.grouped = 0
        """Groups of two rows or more."""
        self.moved = 0
        """Rows placed on another side than their own prompt's hash."""
        self.split_groups = 0
        """Merges of a train group with a valid group (by a prompt similar to both)."""
        self.largest = 1

    def _root(self, number: int) -> int:
        parent = self._parent
        while parent[number] != number:
            parent[number] = parent[parent[number]]
            number = parent[number]
        return number

    def _union(self, root: int, other: int) -> int:
        """Merge ``other``'s group into ``root``'s (the side stays ``root``'s); the new root."""
        if root == other:
            return root
        if self._valid[root] != self._valid[other]:
            self.split_groups += 1
        self.grouped -= (self._size[root] > 1) + (self._size[other] > 1)
        self._parent[other] = root
        self._size[root] += self._size[other]
        self.grouped += 1
        self.largest = max(self.largest, self._size[root])
        return root

    def sides(self, keys: Sequence[bytes], texts: Sequence[str]) -> list[Side]:
        """The side of each row, in order: ``keys`` its prompt key, ``texts`` its prompt's
        normalised words (compared for groups)."""
        own = [self.own_side(key) for key in keys]
        links = self.index.link(texts) if self.index is not None else None
        return self._place(own, links)

    def sides_sketched(self, own: Sequence[bool], sketches: Sketches | None) -> list[Side]:
        """``sides`` of rows whose own side (True: valid) and prompt sketches were made
        beforehand (``sketches`` for this split's index; None without groups)."""
        links = None
        if self.index is not None:
            if sketches is None:
                raise ValueError("a split by groups needs the prompts' sketches")
            links = self.index.link_sketched(sketches)
        return self._place(own, links)

    def _place(self, own: Sequence[bool], links: list[list[int]] | None) -> list[Side]:
        self.placed += len(own)
        if links is None:
            return ["valid" if valid else "train" for valid in own]
        placed: list[Side] = []
        for valid, near in zip(own, links, strict=True):
            number = len(self._parent)
            self._parent.append(number)
            self._size.append(1)
            self._valid.append(valid)
            if near:
                root = self._root(near[0])
                self._valid[number] = self._valid[root]
                root = self._union(root, number)
                for other in near[1:]:
                    root = self._union(root, self._root(other))
            chosen = bool(self._valid[number])
            self.moved += chosen != valid
            placed.append("valid" if chosen else "train")
        return placed

    def summary(self, threshold: float | None) -> dict[str, Any]:
        """For the report: how the rows were grouped."""
        return {
            "valid_share": self.valid_share,
            "group_threshold": threshold,
            "groups_merged": self.grouped,
            "rows_moved": self.moved,
            "largest_group": self.largest if self.placed else 0,
            "split_groups": self.split_groups,
        }
