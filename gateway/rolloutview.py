"""A rollout described for people (the admin API, `gateway rollout status`, the dashboard): its
stored state with each slice's gates as they stand, its decisions, and a student's training cost
for the savings. Pure reading; the deciding is `gateway.rollouts.RolloutService`'s."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from autopilot.controller import Rollout, json_safe
from autopilot.ledger import training_cost_usd
from capture.errortext import describe_error
from capture.students import current_student


def at(epoch: float) -> dt.datetime:
    """Epoch seconds as a UTC datetime."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


async def training_cost(engine: AsyncEngine, route: str, variant: str) -> float | None:
    """A registered student's training cost, where its backend reported the trained tokens
    (``gateway register`` keeps them in the lineage) and its base model's training price is
    known; None otherwise (unknown, never 0)."""
    from exporter.hyperparams import training_price

    student = await current_student(engine, route, variant)
    if student is None:
        return None
    lineage = student.get("lineage") or {}
    base = student.get("base_model") or lineage.get("base_model")
    price = training_price(str(base)) if base else None
    return training_cost_usd(lineage.get("trained_tokens"), price)


def readable_state(route: str, state: Mapping[str, Any], now: float) -> dict[str, Any]:
    """`describe_state`, or, for a stored state this gateway cannot read (another version's, or
    damaged), what is known of it and why: one bad row never fails the listing."""
    try:
        return describe_state(state, now)
    except (KeyError, TypeError, ValueError) as exc:
        stored = state.get("config")
        config: Mapping[str, Any] = stored if isinstance(stored, dict) else {}
        return {
            "route": route,
            "status": str(state.get("status", "unknown")),
            "reason": "",
            "incumbent": config.get("incumbent"),
            "candidate": config.get("candidate"),
            "started": None,
            "slices": [],
            "unreadable": f"the stored state cannot be read: {describe_error(exc)}",
        }


def describe_state(state: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A saved rollout for people: configuration, status, slices with their gates' numbers."""
    rollout = Rollout.from_state(state)
    c = rollout.config
    slices = []
    for s in rollout.slices.values():
        decision = json_safe(s.gates.decision(now - s.stage_started).as_dict())
        slices.append(
            {
                "name": s.name,
                "tags": s.tags,
                "stage": s.stage,
                "share": rollout.share(s),
                "status": s.status,
                "stage_started": at(s.stage_started).isoformat(),
                "retries_used": s.retries_used,
                "gates": decision,
            }
        )
    return {
        "route": c.route,
        "status": rollout.status,
        "reason": rollout.reason,
        "incumbent": c.incumbent,
        "candidate": c.candidate,
        "started": at(rollout.started).isoformat(),
        "config": c.as_dict(),
        "shadow_on": rollout.shadow_on,
        "slices": slices,
    }


def brief(described: dict[str, Any]) -> dict[str, Any]:
    keys = ("route", "status", "reason", "incumbent", "candidate", "started")
    out = {k: described[k] for k in keys}
    out["slices"] = [
        {k: s[k] for k in ("name", "stage", "share", "status")} for s in described["slices"]
    ]
    return out


def decision_view(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("slice", "action", "from_stage", "to_stage", "share", "reason")}
    at = row["at"]
    out["at"] = at.isoformat() if isinstance(at, dt.datetime) else str(at)
    out["evidence"] = json_safe(row.get("evidence"))
    return out
