"""The dashboard's savings: per route and day, what students saved against the incumbent.

The figures are the savings ledger's (``capture.ledger.usage_sums`` in SQL, priced by
``autopilot.ledger``): the calls a student answered, what they cost, what the incumbent's price
makes of the same tokens, the gross savings, the cost of evaluating the students (judge,
counterfactual teacher calls, shadow copies) and the net. Training cost is not in it.

Which variant is a route's incumbent: the incumbent of the route's rollout when the store has
one (whatever its status: after a rollback the incumbent is still the incumbent), else the
configured variant with the largest weight (the first such in the configuration on a tie). Every
other variant of the route counts as a student. Its price is the gateway's price table (the
built-in prices with ``capture.prices`` on top), looked up by the incumbent's upstream model.

Unknown is never 0: when the incumbent's model has no price, what it would have cost, the gross
and the net are null; when every call of a kind is unpriced (no usage, or a model without a
price), that kind's cost is null, and so is every figure it enters. Partly priced days carry
their ``unpriced`` counts: the sums cover the priced calls only, on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from autopilot.ledger import MONEY_FIELDS, ledger
from capture.ledger import COUNTERFACTUAL, JUDGE, UsageSums, usage_sums
from capture.pricing import Price, PriceTable
from gateway.dashboard.window import Window
from gateway.rolloutview import training_cost
from router.config import RouteConfig

EVALUATION_KINDS = {JUDGE: "judge", COUNTERFACTUAL: "counterfactual", "shadow": "shadow"}
MONEY = MONEY_FIELDS


def choose_incumbent(route: RouteConfig, rollout_incumbent: str | None) -> tuple[str, str]:
    """(variant, why): the rollout's incumbent if it is still a variant, else the heaviest."""
    if rollout_incumbent is not None and rollout_incumbent in route.variants:
        return rollout_incumbent, "rollout"
    heaviest = max(route.variants.items(), key=lambda item: item[1].weight)[0]
    return heaviest, "largest weight"


def _price_view(price: Price | None) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "input": price.input,
        "cached_input": price.cached_input,
        "output": price.output,
        "cache_write": price.cache_write,
    }


def _known(sums: UsageSums | None) -> bool:
    """Whether the kind's cost is known: no calls (0 is then true), or some priced."""
    return sums is None or sums.calls > sums.unpriced


def day_line(
    route: str, day: str, kinds: Mapping[str, UsageSums], price: Price | None
) -> dict[str, Any]:
    """One route's day from its sums by kind, priced at the incumbent's ``price`` (None:
    unknown), with every unknown figure null."""
    student = kinds.get("student")
    if price is not None:
        line = ledger(kinds.values(), {route: price})[0].as_dict()
    else:  # the same figures on the student's side; the incumbent's are unknown
        line = ledger(kinds.values(), {route: Price(0.0, None, 0.0)})[0].as_dict()
        line["incumbent_cost_usd"] = None
    line["unpriced_calls"] = student.unpriced if student is not None else 0
    if not _known(student):
        line["student_cost_usd"] = None
        line["incumbent_cost_usd"] = None
    for kind, name in EVALUATION_KINDS.items():
        sums = kinds.get(kind)
        line[f"{name}_calls"] = sums.calls if sums is not None else 0
        line[f"{name}_unpriced_calls"] = sums.unpriced if sums is not None else 0
        if not _known(sums):
            line[f"{name}_cost_usd"] = None
    if line["student_cost_usd"] is None or line["incumbent_cost_usd"] is None:
        line["gross_savings_usd"] = None
    evaluation = [line[f"{name}_cost_usd"] for name in EVALUATION_KINDS.values()]
    if line["gross_savings_usd"] is None or any(v is None for v in evaluation):
        line["net_savings_usd"] = None
    return line


def _totals(lines: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(MONEY, 0.0)
    out["student_calls"] = 0
    out["unpriced_calls"] = 0
    for line in lines:
        out["student_calls"] += line["student_calls"]
        out["unpriced_calls"] += line["unpriced_calls"]
        for name in MONEY:
            value = line[name]
            out[name] = None if value is None or out[name] is None else out[name] + value
    return out


async def build_savings(
    engine: AsyncEngine,
    routes: Mapping[str, RouteConfig],
    rollout_incumbents: Mapping[str, str],
    prices: PriceTable,
    span: Window,
) -> dict[str, Any]:
    """Per configured route with students: its incumbent and price, a line per day, totals."""
    chosen: dict[str, tuple[str, str]] = {}
    students: dict[str, list[str]] = {}
    for name, route in routes.items():
        choice = choose_incumbent(route, rollout_incumbents.get(name))
        others = [variant for variant in route.variants if variant != choice[0]]
        if others:
            chosen[name] = choice
            students[name] = others
    sums = await usage_sums(engine, students, span.start, span.end)
    by_day: dict[str, dict[str, dict[str, UsageSums]]] = {}
    for s in sums:
        by_day.setdefault(s.route, {}).setdefault(s.day, {})[s.kind] = s
    out = []
    for name, (incumbent, why) in chosen.items():
        model = routes[name].variants[incumbent].model
        price = prices.price(model)
        days = by_day.get(name, {})
        lines = [day_line(name, day, days[day], price) for day in sorted(days)]
        training = {v: await training_cost(engine, name, v) for v in students[name]}
        out.append(
            {
                "route": name,
                "incumbent": incumbent,
                "incumbent_model": model,
                "incumbent_chosen_by": why,
                "incumbent_price": _price_view(price),
                "students": students[name],
                "days": lines,
                "totals": _totals(lines),
                "training_cost_usd": training,
            }
        )
    return {
        "window": span.as_json(),
        "routes": out,
        "notes": (
            "Per day, training is not included; each student's training cost (the tokens its"
            " backend reported, at its base model's training price) is beside the totals."
            " Costs are USD; null is unknown."
        ),
    }
