"""Train/validation split by a hash of the prompt.

The same prompt (system messages aside) always lands on the same side, so no validation
prompt was trained on, and a re-export of a grown store keeps every old row where it was:
the side depends on the prompt and the salt only, never on what else was selected.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Side = Literal["train", "valid"]
DEFAULT_VALID_SHARE = 0.1
DEFAULT_SALT = "split-v1"


def share_of(prompt_key: bytes, salt: str = DEFAULT_SALT) -> float:
    """Where the prompt falls in [0, 1), uniformly."""
    digest = hashlib.blake2b(prompt_key, digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def side_of(
    prompt_key: bytes, valid_share: float = DEFAULT_VALID_SHARE, salt: str = DEFAULT_SALT
) -> Side:
    return "valid" if share_of(prompt_key, salt) < valid_share else "train"
