"""Sticky assignment by weighted rendezvous hashing.

Each variant scores a user with ``-ln(u) / weight``, where ``u`` in (0, 1) is a hash of
(route, user, variant); the lowest score wins. The winner is a pure function of the route, the
user and the weights, so every replica agrees and a restart changes nothing, with no shared
state. A variant wins with probability ``weight / total``. Raising one variant's weight lowers
only its own scores, so a ramp moves users into that variant and never between the others or
out of it; lowering a weight only moves users out of that variant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from hashlib import blake2b

_SCALE = 1.0 / 2.0**64


def unit_hash(route: str, user: str, variant: str) -> float:
    """A number in (0, 1), uniform over users, fixed for (route, user, variant)."""
    digest = blake2b(f"{route}\x1f{user}\x1f{variant}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) * _SCALE


def pick(route: str, user: str, variants: Sequence[tuple[str, int]]) -> str:
    """The variant (name, weight) a user is assigned to; weights of 0 never win."""
    best_name = ""
    best_score = math.inf
    for name, weight in variants:
        if weight <= 0:
            continue
        score = -math.log(unit_hash(route, user, name)) / weight
        if score < best_score:
            best_name, best_score = name, score
    if not best_name:
        raise ValueError(f"route {route!r} has no variant with a weight above 0")
    return best_name
