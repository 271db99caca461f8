"""Confidence intervals for a win/tie/loss tally (95% unless told)."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; sound for small samples and rates near 0 or 1."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Tally:
    wins: int
    ties: int
    losses: int

    @property
    def total(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def score(self) -> float:
        """Wins plus half the ties, over all: 0.5 is a draw."""
        return (self.wins + 0.5 * self.ties) / self.total if self.total else 0.5

    def score_interval(self, z: float = Z95) -> tuple[float, float]:
        """Normal interval of the mean of per-item scores (1, 0.5, 0), clipped to [0, 1]."""
        n = self.total
        if n < 2:
            return 0.0, 1.0
        mean = self.score
        variance = (
            self.wins * (1 - mean) ** 2 + self.ties * (0.5 - mean) ** 2 + self.losses * mean**2
        ) / (n - 1)
        half = z * math.sqrt(variance / n)
        return max(0.0, mean - half), min(1.0, mean + half)

    def verdict(self) -> str:
        low, high = self.score_interval()
        if self.total == 0:
            return "no judged pairs"
        if low > 0.5:
            return "the candidate is better"
        if high < 0.5:
            return "the candidate is worse"
        return "no significant difference at this sample size"
