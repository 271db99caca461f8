"""The evaluation report: win/tie/loss with confidence intervals, format checks, latency and
cost side by side. As a dict (``--json``) and as text."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.evaluate.judge import Verdict
from exporter.evaluate.replay import Replayed
from exporter.evaluate.stats import Tally, wilson

if TYPE_CHECKING:
    from exporter.evaluate.run import EvalOptions


def _latency(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90 = np.percentile(values, [50, 90])
    return {
        "p50_ms": round(float(p50), 1),
        "p90_ms": round(float(p90), 1),
        "mean_ms": round(statistics.fmean(values), 1),
    }


def _cost(values: list[float | None]) -> dict[str, float | int] | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"mean_usd": statistics.fmean(known), "total_usd": sum(known), "priced": len(known)}


def build(
    options: EvalOptions,
    replayed: list[Replayed],
    verdicts: list[Verdict | None],
    checks: dict[str, Counter[bool]],
    eligible: int,
) -> dict[str, Any]:
    failed = sum(1 for r in replayed if r.error is not None)
    counted = Counter(v for v in verdicts if v is not None)
    unjudged = sum(
        1 for r, v in zip(replayed, verdicts, strict=True) if r.answer is not None and v is None
    )
    # a failed candidate call is a loss: an error is worse than any answer
    tally = Tally(counted["candidate"], counted["tie"], counted["baseline"] + failed)
    score_low, score_high = tally.score_interval()
    shares = {}
    for name, n in (("win", tally.wins), ("tie", tally.ties), ("loss", tally.losses)):
        low, high = wilson(n, tally.total)
        shares[name] = {
            "count": n,
            "share": round(n / tally.total, 3) if tally.total else 0.0,
            "ci95": [round(low, 3), round(high, 3)],
        }
    candidate_latency = _latency([r.latency_ms for r in replayed if r.error is None])
    baseline_latency = _latency([r.item.baseline_ms for r in replayed])
    candidate_cost = _cost([r.cost_usd for r in replayed if r.error is None])
    baseline_cost = _cost([r.item.baseline_cost for r in replayed])
    comparison: dict[str, Any] = {}
    if candidate_latency and baseline_latency and candidate_latency["p50_ms"] > 0:
        comparison["speedup_p50"] = round(
            baseline_latency["p50_ms"] / candidate_latency["p50_ms"], 2
        )
    if candidate_cost and baseline_cost and candidate_cost["mean_usd"] > 0:
        comparison["cost_ratio"] = round(baseline_cost["mean_usd"] / candidate_cost["mean_usd"], 2)
    return {
        "route": options.route,
        "candidate": options.candidate,
        "baseline": options.baseline,
        "judge": options.judge_model or f"{options.route} ({options.baseline})",
        "held_out_available": eligible,
        "replayed": len(replayed),
        "failed": failed,
        "errors": sorted({r.error for r in replayed if r.error})[:5],
        "unjudged": unjudged,
        "judged": tally.total,
        "results": shares,
        "score": round(tally.score, 3),
        "score_ci95": [round(score_low, 3), round(score_high, 3)],
        "verdict": tally.verdict(),
        "checks": {
            name: {
                "passed": c[True],
                "total": c[True] + c[False],
                "share": round(c[True] / (c[True] + c[False]), 3),
            }
            for name, c in sorted(checks.items())
        },
        "latency": {"candidate": candidate_latency, "baseline": baseline_latency},
        "cost": {"candidate": candidate_cost, "baseline": baseline_cost},
        "comparison": comparison,
        "note": (
            "baseline latency and cost are as recorded at capture time; "
            "the candidate's are measured now, through the gateway"
        ),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"eval of {report['candidate']} against {report['baseline']} on route {report['route']}: "
        f"{report['replayed']} held-out prompts (of {report['held_out_available']}), "
        f"judge {report['judge']}"
    ]
    results = report["results"]
    lines.append(
        "  "
        + ", ".join(
            f"{name} {r['count']} ({r['share']:.0%}, 95% CI {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%})"
            for name, r in results.items()
        )
    )
    low, high = report["score_ci95"]
    lines.append(
        f"  score (win + tie/2) {report['score']:.2f}, 95% CI {low:.2f}-{high:.2f}: "
        f"{report['verdict']}"
    )
    if report["failed"]:
        lines.append(
            f"  {report['failed']} candidate call(s) failed (counted as losses): "
            + "; ".join(report["errors"])
        )
    if report["unjudged"]:
        lines.append(f"  {report['unjudged']} pair(s) without a readable verdict (left out)")
    for name, c in report["checks"].items():
        lines.append(f"  check {name}: {c['passed']}/{c['total']} ({c['share']:.0%})")
    lines.append(f"  {'':<12}{'candidate':>14}{'baseline':>14}")
    latency = report["latency"]
    for key, label in (("p50_ms", "latency p50"), ("p90_ms", "latency p90")):
        cand = latency["candidate"][key] if latency["candidate"] else None
        base = latency["baseline"][key] if latency["baseline"] else None
        lines.append(f"  {label:<12}{_ms(cand):>14}{_ms(base):>14}")
    cost = report["cost"]
    cand_cost = cost["candidate"]["mean_usd"] if cost["candidate"] else None
    base_cost = cost["baseline"]["mean_usd"] if cost["baseline"] else None
    lines.append(f"  {'cost/call':<12}{_usd(cand_cost):>14}{_usd(base_cost):>14}")
    comparison = report["comparison"]
    if comparison:
        parts = []
        if "speedup_p50" in comparison:
            parts.append(f"{comparison['speedup_p50']}x faster (p50)")
        if "cost_ratio" in comparison:
            parts.append(f"{comparison['cost_ratio']}x cheaper per call")
        lines.append("  the candidate is " + ", ".join(parts))
    lines.append(f"  ({report['note']})")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"
