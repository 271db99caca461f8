"""Where to start: epochs, batch size, learning-rate multiplier, the per-example token limit
and the training price of a base model.

- Epochs: the rule of OpenAI's chat fine-tuning data-prep guide. 3 by default; a small set is
  seen more often so that about 100 examples are trained on (at most 25 epochs), a big one
  less often so that about 25,000 are (at least 1).
- Batch size: about 0.2% of the training examples, at least 1 and at most 256.
- Learning-rate multiplier: 0.05, 0.1 or 0.2 as the batch size grows (larger batches take
  larger rates), inside the 0.02-0.2 range OpenAI suggests exploring.
- Tokens per example: the training context of the base model (65,536 for the gpt-4o and
  gpt-4.1 families, 16,385 for gpt-3.5-turbo and older); longer examples are truncated by the
  service, so the export drops them instead.
- Training prices: OpenAI's list prices per 1M training tokens as of August 2025; pass
  ``--training-price`` for another model or service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

MIN_EXAMPLES = 10
"""Fewer training examples than this: the service refuses the file (an error)."""
RECOMMENDED_EXAMPLES = 50
"""Fewer than this: a warning (50-100 well-chosen examples are where gains show)."""

DEFAULT_TOKEN_LIMIT = 16_385
TOKEN_LIMITS: Final[dict[str, int]] = {
    "gpt-4o-mini": 65_536,
    "gpt-4o": 65_536,
    "gpt-4.1": 65_536,
    "gpt-4.1-mini": 65_536,
    "gpt-4.1-nano": 65_536,
    "gpt-3.5-turbo": 16_385,
    "davinci-002": 16_385,
    "babbage-002": 16_385,
}

TRAINING_PRICES_AS_OF: Final = "2025-08"
TRAINING_PRICES: Final[dict[str, float]] = {
    "gpt-4.1": 25.00,
    "gpt-4.1-mini": 5.00,
    "gpt-4.1-nano": 1.50,
    "gpt-4o": 25.00,
    "gpt-4o-mini": 3.00,
    "gpt-3.5-turbo": 8.00,
    "davinci-002": 6.00,
    "babbage-002": 0.40,
}
"""USD per 1M training tokens (tokens in the file x epochs)."""


def _family(table: dict[str, float] | dict[str, int], model: str) -> str | None:
    """The longest table entry that ``model`` starts with at a ``-`` boundary."""
    base = model.removeprefix("ft:").split(":", 1)[0]
    best: str | None = None
    for name in table:
        if (base == name or base.startswith(name + "-")) and (
            best is None or len(name) > len(best)
        ):
            best = name
    return best


def token_limit(model: str) -> int:
    family = _family(TOKEN_LIMITS, model)
    return TOKEN_LIMITS[family] if family else DEFAULT_TOKEN_LIMIT


def training_price(model: str) -> float | None:
    family = _family(TRAINING_PRICES, model)
    return TRAINING_PRICES[family] if family else None


def epochs_for(examples: int) -> int:
    if examples <= 0:
        return TARGET_EPOCHS
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // examples)
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


def batch_size_for(examples: int) -> int:
    return max(1, min(256, round(examples * 0.002)))


def lr_multiplier_for(batch_size: int) -> float:
    if batch_size < 8:
        return 0.05
    if batch_size < 64:
        return 0.1
    return 0.2


@dataclass(frozen=True, slots=True)
class Suggestion:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


def suggest(examples: int) -> Suggestion:
    batch = batch_size_for(examples)
    return Suggestion(epochs_for(examples), batch, lr_multiplier_for(batch))
