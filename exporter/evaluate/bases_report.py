"""The base-model comparison as one table: the teacher's row (as recorded), then one row per
candidate x {zero-shot, K-shot}, best first. As a dict (``--json``) and as markdown.

- win rate: the judge's preference for the candidate's answer over the teacher's recorded
  one, ties as halves (0.5: as good as the teacher), with its 95% interval (Wilson's, a tie
  counting as half a win); a failed call is a loss, a pair without a readable verdict is left
  out;
- checks: the format checks passed, over all checks that applied (``checks``);
- latency p50/p95: the candidate's, measured now at the host; the teacher's as recorded;
- cost per call: the mean over the priced calls, "unknown" when the model has no price.

Rows are ranked by win rate, then checks passed, then cost per call (cheaper first).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from capture.pricing import PriceTable
from exporter.evaluate.held_out import HeldOut
from exporter.evaluate.shots import Shot
from exporter.evaluate.stats import Z95, Tally

if TYPE_CHECKING:
    from exporter.evaluate.bases import BasesOptions, Trial

UNKNOWN = "unknown"


def _latency(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1)}


def _cost(values: Sequence[float | None]) -> float | str:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else UNKNOWN


def score_interval(tally: Tally, z: float = Z95) -> tuple[float, float]:
    """The Wilson interval of the win rate, a tie counting as half a win: never a point when
    every pair went one way (as the normal interval is), and no narrower than the true one
    (a tie has less variance than half a win and half a loss)."""
    n = tally.total
    if n == 0:
        return 0.0, 1.0
    p = tally.score
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _price(prices: PriceTable, model: str) -> dict[str, float] | str:
    price = prices.price(model)
    return {"input": price.input, "output": price.output} if price is not None else UNKNOWN


def _row(trial: Trial, prices: PriceTable) -> dict[str, Any]:
    replayed = trial.replayed
    failed = sum(1 for r in replayed if r.error is not None)
    counted = Counter(v for v in trial.verdicts if v is not None)
    unjudged = sum(
        1
        for r, v in zip(replayed, trial.verdicts, strict=True)
        if r.answer is not None and v is None
    )
    tally = Tally(counted["candidate"], counted["tie"], counted["baseline"] + failed)
    low, high = score_interval(tally)
    passed = sum(c[True] for c in trial.checks.values())
    total = sum(c[True] + c[False] for c in trial.checks.values())
    return {
        "candidate": trial.base,
        "shots": trial.shots,
        "prompting": f"{trial.shots}-shot" if trial.shots else "zero-shot",
        "replayed": len(replayed),
        "failed": failed,
        "errors": sorted({r.error for r in replayed if r.error})[:3],
        "judged": tally.total,
        "unjudged": unjudged,
        "wins": tally.wins,
        "ties": tally.ties,
        "losses": tally.losses,
        "win_rate": round(tally.score, 3) if tally.total else None,
        "win_rate_ci95": [round(low, 3), round(high, 3)],
        "checks": {
            name: {"passed": c[True], "total": c[True] + c[False]}
            for name, c in sorted(trial.checks.items())
        },
        "checks_passed": passed,
        "checks_total": total,
        "checks_share": round(passed / total, 3) if total else None,
        "latency": _latency([r.latency_ms for r in replayed if r.error is None]),
        "cost_per_call_usd": _cost([r.cost_usd for r in replayed if r.error is None]),
        "price_per_1m": _price(prices, trial.base),
    }


def _teacher(items: Sequence[HeldOut], baseline: str) -> dict[str, Any]:
    models = sorted({item.baseline_model for item in items if item.baseline_model})
    return {
        "candidate": ", ".join(models) or baseline,
        "variant": baseline,
        "prompting": "recorded",
        "replayed": len(items),
        "latency": _latency([item.baseline_ms for item in items]),
        "cost_per_call_usd": _cost([item.baseline_cost for item in items]),
    }


def _rank_key(row: dict[str, Any]) -> tuple[float, float, float]:
    cost = row["cost_per_call_usd"]
    return (
        -(row["win_rate"] if row["win_rate"] is not None else -1.0),
        -(row["checks_share"] if row["checks_share"] is not None else -1.0),
        cost if isinstance(cost, float) else float("inf"),
    )


def build(
    options: BasesOptions,
    items: Sequence[HeldOut],
    eligible: int,
    shots: Sequence[Shot],
    trials: Sequence[Trial],
    prices: PriceTable,
) -> dict[str, Any]:
    rows = sorted((_row(trial, prices) for trial in trials), key=_rank_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {
        "route": options.route,
        "baseline": options.baseline,
        "judge": options.judge_model or f"{options.route} ({options.baseline})",
        "host": options.host_url,
        "bases": list(options.bases),
        "held_out_available": eligible,
        "held_out": len(items),
        "shots": {
            "requested": options.shots,
            "used": len(shots),
            "call_ids": [shot.call_id for shot in shots],
        },
        "teacher": _teacher(items, options.baseline),
        "rows": rows,
        "notes": [
            "win rate: the judge's preference for the candidate's answer over the teacher's "
            "recorded one, ties as halves (0.5 = as good as the teacher); a failed call counts "
            "as a loss",
            "the teacher's latency and cost are as recorded at capture time (through the "
            "gateway); the candidates' are measured now, directly at the host",
            "cost per call: mean over priced calls, from capture's price table and --price; "
            "unknown when the model has no price",
        ],
    }


def _ci(row: dict[str, Any]) -> str:
    if row["win_rate"] is None:
        return "-"
    low, high = row["win_rate_ci95"]
    return f"{row['win_rate']:.2f} ({low:.2f}-{high:.2f})"


def _ms(latency: dict[str, float] | None, key: str) -> str:
    return "-" if latency is None else f"{latency[key]:,.0f} ms"


def _usd(value: float | str) -> str:
    return value if isinstance(value, str) else f"${value:.6f}"


def render(report: dict[str, Any]) -> str:
    """The report as a markdown table, with what it compares above and its notes below."""
    shots = report["shots"]
    lines = [
        f"Candidate base models for route `{report['route']}` at {report['host']}: "
        f"{report['held_out']} held-out prompts (of {report['held_out_available']}), judged by "
        f"{report['judge']} against the {report['baseline']}'s recorded answers"
        + (f"; {shots['used']} training-side example(s) as shots" if shots["requested"] else "")
        + ".",
        "",
        "| rank | model | prompting | win rate (95% CI) | W/T/L | checks | latency p50 | "
        "latency p95 | cost/call |",
        "| ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    teacher = report["teacher"]
    lines.append(
        f"| - | {teacher['candidate']} ({teacher['variant']}) | recorded | baseline | - | - | "
        f"{_ms(teacher['latency'], 'p50_ms')} | {_ms(teacher['latency'], 'p95_ms')} | "
        f"{_usd(teacher['cost_per_call_usd'])} |"
    )
    for row in report["rows"]:
        checks = f"{row['checks_passed']}/{row['checks_total']}" if row["checks_total"] else "-"
        lines.append(
            f"| {row['rank']} | {row['candidate']} | {row['prompting']} | {_ci(row)} | "
            f"{row['wins']}/{row['ties']}/{row['losses']} | {checks} | "
            f"{_ms(row['latency'], 'p50_ms')} | {_ms(row['latency'], 'p95_ms')} | "
            f"{_usd(row['cost_per_call_usd'])} |"
        )
    lines.append("")
    for row in report["rows"]:
        if row["checks"]:
            lines.append(
                f"- {row['candidate']} {row['prompting']} checks: "
                + ", ".join(f"{n} {c['passed']}/{c['total']}" for n, c in row["checks"].items())
            )
        if row["failed"]:
            lines.append(
                f"- {row['candidate']} {row['prompting']}: {row['failed']} call(s) failed "
                f"(counted as losses): " + "; ".join(row["errors"])
            )
        if row["unjudged"]:
            lines.append(
                f"- {row['candidate']} {row['prompting']}: {row['unjudged']} pair(s) without a "
                "readable verdict (left out)"
            )
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines)
