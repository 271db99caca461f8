"""The savings ledger: what the calls students answered would have cost on the incumbent, and
what was saved per route and day, net of evaluating the students.

From `capture.ledger.UsageSums` (SQL: `capture.ledger.usage_sums`; pure:
`capture.ledger.sums_from_rows`), priced here with the incumbent's price (a
`capture.pricing.Price`, e.g. ``PriceTable.price(incumbent_model)``):

    incumbent_cost = (input * price.input + cached * cached_rate + cache_writes * write_rate
                      + completion * price.output) / 1e6   over the students' priced calls
    gross_savings  = incumbent_cost - student_cost
    net_savings    = gross_savings - judge - counterfactual - shadow costs

Calls without a price (``unpriced``) are left out of both sides and counted. Training cost is
not in it yet (the backends' reports would be subtracted here once recorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from capture.ledger import COUNTERFACTUAL, JUDGE, UsageSums
from capture.pricing import Price


@dataclass(frozen=True)
class LedgerLine:
    route: str
    day: str
    student_calls: int
    unpriced_calls: int
    student_cost_usd: float
    incumbent_cost_usd: float
    gross_savings_usd: float
    judge_cost_usd: float
    counterfactual_cost_usd: float
    shadow_cost_usd: float
    net_savings_usd: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def incumbent_cost(price: Price, sums: UsageSums) -> float:
    """What the incumbent's price makes of the same tokens, USD."""
    cached = price.cached_input if price.cached_input is not None else price.input
    write = price.cache_write if price.cache_write is not None else price.input
    return (
        sums.input_tokens * price.input
        + sums.cached_tokens * cached
        + sums.cache_write_tokens * write
        + sums.completion_tokens * price.output
    ) / 1_000_000


def ledger(sums: Iterable[UsageSums], incumbents: Mapping[str, Price]) -> list[LedgerLine]:
    """One line per route and day, sorted; ValueError for a route without an incumbent price."""
    by_day: dict[tuple[str, str], dict[str, UsageSums]] = {}
    for s in sums:
        if s.route not in incumbents:
            raise ValueError(f"no incumbent price for route {s.route!r}")
        by_day.setdefault((s.route, s.day), {})[s.kind] = s
    out = []
    for (route, day), kinds in sorted(by_day.items()):
        student = kinds.get("student")
        spent = student.cost_usd if student else 0.0
        would = incumbent_cost(incumbents[route], student) if student else 0.0
        judge = kinds[JUDGE].cost_usd if JUDGE in kinds else 0.0
        cf = kinds[COUNTERFACTUAL].cost_usd if COUNTERFACTUAL in kinds else 0.0
        shadow = kinds["shadow"].cost_usd if "shadow" in kinds else 0.0
        gross = would - spent
        out.append(
            LedgerLine(
                route,
                day,
                student.calls if student else 0,
                student.unpriced if student else 0,
                spent,
                would,
                gross,
                judge,
                cf,
                shadow,
                gross - judge - cf - shadow,
            )
        )
    return out


MONEY_FIELDS = (
    "student_cost_usd",
    "incumbent_cost_usd",
    "gross_savings_usd",
    "judge_cost_usd",
    "counterfactual_cost_usd",
    "shadow_cost_usd",
    "net_savings_usd",
)
"""A `LedgerLine`'s money columns, USD."""


def totals(lines: Iterable[LedgerLine]) -> dict[str, dict[str, float]]:
    """Per route, the lines' money columns summed over days (for the API's summary)."""
    money = MONEY_FIELDS
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        t = out.setdefault(line.route, dict.fromkeys(money, 0.0))
        for name in money:
            t[name] += getattr(line, name)
    return out


@dataclass(frozen=True)
class Projection:
    """What moving ``share`` of a route's traffic to the candidate would save, from its shadow
    copies: the same requests, priced at the candidate's real cost and at the incumbent's price
    for the same tokens."""

    route: str
    share: float
    calls_per_day: float
    """The route's live calls per day over the window the projection was made from."""
    sample_calls: int
    """Priced shadow copies the per-call figures come from (0: no projection can be made)."""
    candidate_cost_per_call_usd: float | None
    incumbent_cost_per_call_usd: float | None
    savings_per_day_usd: float | None
    """None when there is nothing priced to project from (unknown, never 0)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def project(
    route: str,
    shadow: UsageSums | None,
    incumbent: Price,
    calls_per_day: float,
    share: float,
) -> Projection:
    """Savings per day at ``share``: (incumbent's price - candidate's cost) per call, over the
    candidate's priced shadow copies, times the calls it would answer per day."""
    if not 0.0 <= share <= 1.0 or not calls_per_day >= 0.0:
        raise ValueError("share must lie in [0, 1] and calls_per_day be >= 0")
    priced = (shadow.calls - shadow.unpriced) if shadow is not None else 0
    if shadow is None or priced <= 0:
        return Projection(route, share, calls_per_day, 0, None, None, None)
    spent = shadow.cost_usd / priced
    would = incumbent_cost(incumbent, shadow) / priced
    return Projection(
        route, share, calls_per_day, priced, spent, would, (would - spent) * calls_per_day * share
    )


def training_cost_usd(trained_tokens: Any, price_per_1m: float | None) -> float | None:
    """What training a student cost, from the tokens its backend reported it trained on and the
    base model's training price per 1M tokens; None when either is unknown (never 0)."""
    if price_per_1m is None or isinstance(trained_tokens, bool):
        return None
    if not isinstance(trained_tokens, int) or trained_tokens < 0:
        return None
    return trained_tokens * price_per_1m / 1_000_000
