"""The dashboard's rollouts: each route's rollout as the page draws it, read from the store.

A rollout's state (``autopilot.controller.Rollout.state()``, saved by the controller through
``capture.rollouts.RolloutTable``) holds each slice's stage and the numbers of its sequential
tests; its decisions are the timeline. For each slice the page shows its gates:

- a slice still moving (running, or promoted and watched at the target): the gates *now*, from
  the stored tests' numbers (``SliceGates.decision`` at the slice's time in its stage), so the
  page shows what the controller would see at its next look (``source: "live"``);
- a pinned slice, or any slice of a finished rollout: the evidence of its latest decision
  (``source: "decision"``), since its tests stopped counting then.

Each gate: its verdict (``pass``; ``continue``, which the page shows as *hold*; ``fail``), the
statistic, the estimate, the pass and fail bounds with their alphas, the threshold, and the
sample sizes of both sides. Everything is JSON-safe (NaN and infinities as null). A state the
controller of this version cannot read is shown as stored, without gates, saying why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from autopilot.controller import (
    PROMOTED,
    RUNNING,
    SLICE_PINNED,
    Rollout,
    SliceState,
    json_safe,
)
from capture.rollouts import RolloutTable
from capture.schema import NAME_LENGTH

TIMELINE_LIMIT = 500
"""The newest decisions shown per route."""


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat()
    return None if value is None else str(value)


def _epoch_iso(value: float) -> str:
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()


def _parsed(state: Mapping[str, Any] | None) -> tuple[Rollout | None, str | None]:
    if state is None:
        return None, "no state stored"
    try:
        return Rollout.from_state(state), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"the stored state cannot be read by this gateway: {exc}"


def _config_view(rollout: Rollout) -> dict[str, Any]:
    c = rollout.config
    g = c.gates
    return {
        "incumbent": c.incumbent,
        "candidate": c.candidate,
        "stages": list(c.stages),
        "target": c.target,
        "holdout": c.holdout,
        "slice_keys": list(c.slice_keys),
        "max_slices": c.max_slices,
        "retries": c.retries,
        "gates": {
            "quality_margin": g.quality_margin,
            "error_margin": g.error_margin,
            "feedback_margin": g.feedback_margin,
            "latency_p95_ms": g.latency_p95_ms,
            "ttft_p95_ms": g.ttft_p95_ms,
            "max_cost_ratio": g.max_cost_ratio,
            "min_samples": g.min_samples,
            "min_dwell_s": g.min_dwell_s,
            "max_duration_s": g.max_duration_s,
            "alpha": g.alpha,
            "alpha_rollback": g.alpha_rollback,
        },
    }


def _decision_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": _iso(row.get("at")),
        "slice": row.get("slice"),
        "action": row.get("action"),
        "from_stage": row.get("from_stage"),
        "to_stage": row.get("to_stage"),
        "share": row.get("share"),
        "reason": row.get("reason"),
        "evidence": row.get("evidence"),
    }


def _slice_view(
    rollout: Rollout, s: SliceState, latest: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    c = rollout.config
    moving = rollout.status in (RUNNING, PROMOTED) and s.status != SLICE_PINNED
    gates: dict[str, Any] | None
    if moving:
        gates = s.gates.decision(max(0.0, now - s.stage_started)).as_dict()
        source = "live"
    else:
        evidence = latest.get("evidence") if latest is not None else None
        gates = evidence if isinstance(evidence, dict) and evidence.get("gates") else None
        source = "decision"
    return {
        "name": s.name,
        "tags": dict(s.tags),
        "status": s.status,
        "stage": s.stage,
        "stages": len(c.stages),
        "share": rollout.share(s),
        "stage_started": _epoch_iso(s.stage_started),
        "last_safe": s.last_safe,
        "retries_used": s.retries_used,
        "gates": gates,
        "gates_source": source,
        "latest_decision": latest,
    }


async def list_view(table: RolloutTable) -> list[dict[str, Any]]:
    """Every route's rollout: status, incumbent and candidate, each slice's stage, share and
    status (a summary: no gates, no timeline)."""
    out = []
    for row in await table.list_rollouts():
        route = str(row["route"])
        rollout, problem = _parsed(await table.load(route))
        item: dict[str, Any] = {
            "route": route,
            "status": row["status"],
            "created_at": _iso(row.get("created_at")),
            "updated_at": _iso(row.get("updated_at")),
        }
        if rollout is None:
            item.update(problem=problem, slices={})
        else:
            summary = rollout.summary()
            item.update(
                reason=summary["reason"],
                incumbent=rollout.config.incumbent,
                candidate=rollout.config.candidate,
                slices=summary["slices"],
            )
        out.append(item)
    return out


def _latest_by_slice(decisions: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for d in decisions:  # oldest first: the last one seen is the latest
        latest[str(d["slice"])] = d
    return latest


async def detail_view(table: RolloutTable, route: str, now: float) -> dict[str, Any] | None:
    """One route's rollout: its state, each slice's gates, and its decisions (oldest first);
    None when the route has no rollout."""
    state = await table.load(route)
    if state is None:
        return None
    rows = await table.decisions(route, limit=TIMELINE_LIMIT)
    decisions = [_decision_view(r) for r in rows]
    listed = {str(r["route"]): r for r in await table.list_rollouts()}
    row = listed.get(route[:NAME_LENGTH], {})
    rollout, problem = _parsed(state)
    view: dict[str, Any] = {
        "route": route,
        "created_at": _iso(row.get("created_at")),
        "updated_at": _iso(row.get("updated_at")),
        "decisions": decisions,
    }
    if rollout is None:
        status = row.get("status") or state.get("status")
        view.update(status=status, problem=problem, state=state, slices=[])
        return json_safe(view)  # type: ignore[no-any-return]
    latest = _latest_by_slice(decisions)
    view.update(
        status=rollout.status,
        reason=rollout.reason,
        started=_epoch_iso(rollout.started),
        shadow_on=rollout.shadow_on,
        config=_config_view(rollout),
        slices=[_slice_view(rollout, s, latest.get(s.name), now) for s in rollout.slices.values()],
    )
    return json_safe(view)  # type: ignore[no-any-return]


async def incumbents(table: RolloutTable) -> dict[str, str]:
    """Each route's incumbent variant, from its stored rollout's configuration."""
    out: dict[str, str] = {}
    for row in await table.list_rollouts():
        route = str(row["route"])
        state = await table.load(route)
        config = state.get("config") if state is not None else None
        incumbent = config.get("incumbent") if isinstance(config, Mapping) else None
        if isinstance(incumbent, str) and incumbent:
            out[route] = incumbent
    return out
