"""The rollout controller: one route's candidate moved through stages, per slice, on evidence.

A rollout moves a candidate variant of a route from shadow through stages of live traffic
(e.g. 5% -> 25% -> 50%) to a target share, keeping a teacher holdout on the incumbent. Traffic
is split into slices by tag keys (``slice_keys``, e.g. ``task``); each slice moves on its own:

- ``tick(now, evidence, actions)`` adds the evidence gathered since the last look (an
  `Evidence`: per slice, judged pairs, checks, errors, latencies, costs, feedback, for both
  sides) to each slice's `autopilot.gates.SliceGates`, asks them for an action, applies it and
  returns the `DecisionRecord`s (each with its stage, gate statistics, sample sizes, bounds);
- ADVANCE moves a slice to the next stage (fresh evidence); passing the last stage promotes the
  slice to the target share, where it keeps being watched (its gates restart every time they
  would advance, as in ``autopilot.simulate``);
- ROLLBACK (a gate significantly worse) sends the slice back to its last safe stage while it
  has ``retries`` left, and otherwise pins it to the incumbent: the other slices carry on;
- GIVE_UP (no decision within the stage's maximum duration) pins the slice to the incumbent;
- an abort, or the candidate's breaker opening, returns every slice to the incumbent at once.
Decisions are applied only through `Actions`, which the gateway implements.

Slices: with no ``slice_keys`` there is one slice, ``*``, whose weights are the route's default
weights. With slice keys, the first ``max_slices - 1`` slices seen get their own weights; any
further ones, and slices not seen yet, follow the route's default weights, the ``*`` slice's.
``max_slices`` is fixed in advance because it is the Bonferroni divisor of alpha.

The state (`Rollout.state()`) is plain JSON, tests' numbers included, so a restarted controller
(`Rollout.from_state`) carries on where it stopped; `RolloutStore` is how it is kept.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
else:  # numpy is imported when a rollout first computes (autopilot.numeric)
    from autopilot.numeric import np

from autopilot.gates import Action, SliceGates
from autopilot.rollout_config import RolloutConfig as RolloutConfig
from autopilot.sequential import (
    ConfidenceSequence,
    QuantileTest,
    RestartedConfidenceSequence,
    TwoSampleTest,
    WinRateTest,
)

STATE_VERSION = 1
DEFAULT_SLICE = "*"
"""The slice whose weights are the route's default weights (every slice without its own)."""

# Rollout statuses
RUNNING = "running"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
ABORTED = "aborted"
GAVE_UP = "gave_up"

# Slice statuses
SLICE_RUNNING = "running"
SLICE_PROMOTED = "promoted"
SLICE_PINNED = "pinned"


class Actions(Protocol):
    """What the controller may do to the gateway's routing (implemented by the gateway)."""

    def set_weights(
        self, route: str, weights: Mapping[str, float], slice: Mapping[str, str] | None
    ) -> None:
        """Split the route's traffic (of one slice, or the default when None) by variant."""

    def pin_slice(self, route: str, slice: Mapping[str, str], variant: str) -> None:
        """Send every call of the slice (its tags) to the variant."""

    def set_shadow_sample(self, route: str, variant: str, rate: float) -> None:
        """Copy this share of the route's calls to the variant in shadow (0 stops it)."""


# --- configuration ------------------------------------------------------------------------------


# --- evidence -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmEvidence:
    """One side's calls in one slice since the last look."""

    calls: int = 0
    errors: int = 0
    """Failed calls, and answers that failed a deterministic check (empty, refusal, invalid JSON
    or tool arguments, finish_reason length)."""
    cost_usd: float = 0.0
    latencies_ms: tuple[float, ...] = ()
    ttfts_ms: tuple[float, ...] = ()
    feedback: tuple[float, ...] = ()
    """App feedback scores, on the gates' feedback_range."""


@dataclass(frozen=True)
class SliceEvidence:
    """One slice's evidence since the last look: judged pairs (from the candidate's view) and
    each side's calls."""

    tags: Mapping[str, str] = field(default_factory=dict)
    wins: int = 0
    ties: int = 0
    losses: int = 0
    candidate: ArmEvidence = ArmEvidence()
    incumbent: ArmEvidence = ArmEvidence()


@dataclass(frozen=True)
class Evidence:
    """What the gateway gathered for one rollout since the controller's last look."""

    slices: Sequence[SliceEvidence] = ()
    abort: str | None = None
    """A person (or the API) aborted the rollout, with why."""
    breaker_open: bool = False
    """The candidate's circuit breaker opened."""


def slice_name(tags: Mapping[str, str], keys: Sequence[str]) -> str:
    """A slice's name from a call's tags: ``task=a,tenant=b`` (missing keys as empty values)."""
    if not keys:
        return DEFAULT_SLICE
    return ",".join(f"{k}={tags.get(k, '')}" for k in keys)


# --- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRecord:
    """One decision with the evidence that made it (for the store, logs, metrics, webhook)."""

    at: dt.datetime
    route: str
    slice: str
    action: str
    """start, advance, promote, hold, rollback, pin, give_up, abort."""
    from_stage: int
    to_stage: int
    share: float
    reason: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "route": self.route,
            "slice": self.slice,
            "action": self.action,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "share": self.share,
            "reason": self.reason,
            "evidence": self.evidence,
        }


def json_safe(value: Any) -> Any:
    """NaN and infinities as None, numpy numbers as Python's: strict JSON for any backend."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- the tests' numbers as JSON ------------------------------------------------------------------

_NESTED = (
    SliceGates,
    WinRateTest,
    TwoSampleTest,
    QuantileTest,
    ConfidenceSequence,
    RestartedConfidenceSequence,
)


def _dump(obj: object) -> dict[str, Any]:
    """Every array (and nested test) of a gates object; the rest comes from the config."""
    out: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if isinstance(value, np.ndarray | np.generic):
            out[name] = float(value) if np.ndim(value) == 0 else np.asarray(value).tolist()
        elif isinstance(value, _NESTED):
            out[name] = _dump(value)
    return out


def _load(obj: object, data: Mapping[str, Any]) -> None:
    for name, value in vars(obj).items():
        if name not in data:
            if isinstance(value, (np.ndarray, np.generic, *_NESTED)):
                raise ValueError(f"the stored gates state lacks {name}")
            continue
        if isinstance(value, np.ndarray | np.generic):
            setattr(obj, name, np.asarray(data[name], dtype=np.float64))
        elif isinstance(value, _NESTED):
            _load(value, data[name])


# --- the rollout --------------------------------------------------------------------------------


@dataclass
class SliceState:
    name: str
    tags: dict[str, str]
    stage: int
    """Index into config.stages; len(stages) means the target (promoted)."""
    status: str
    stage_started: float
    """Epoch seconds when the current stage (or watch window) began."""
    last_safe: int
    retries_used: int
    gates: SliceGates

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tags": dict(self.tags),
            "stage": self.stage,
            "status": self.status,
            "stage_started": self.stage_started,
            "last_safe": self.last_safe,
            "retries_used": self.retries_used,
            "gates": _dump(self.gates),
        }


class Rollout:
    """One route's rollout: its configuration, its slices' states, its status."""

    def __init__(self, config: RolloutConfig, started: float) -> None:
        self.config = config
        self.started = started
        self.status = RUNNING
        self.reason = ""
        self.slices: dict[str, SliceState] = {}
        self.shadow_on = False
        self.begun = False

    # --- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Plain JSON: everything a restarted controller needs to carry on."""
        state: dict[str, Any] = json_safe(
            {
                "version": STATE_VERSION,
                "config": self.config.as_dict(),
                "started": self.started,
                "status": self.status,
                "reason": self.reason,
                "shadow_on": self.shadow_on,
                "begun": self.begun,
                "slices": [s.as_dict() for s in self.slices.values()],
            }
        )
        return state

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> Rollout:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown rollout state version {data.get('version')!r}")
        rollout = cls(RolloutConfig.from_dict(data["config"]), float(data["started"]))
        rollout.status = str(data["status"])
        rollout.reason = str(data.get("reason", ""))
        rollout.shadow_on = bool(data.get("shadow_on", False))
        rollout.begun = bool(data.get("begun", False))
        for s in data["slices"]:
            gates = SliceGates(rollout.config.gates)
            _load(gates, s["gates"])
            rollout.slices[s["name"]] = SliceState(
                name=str(s["name"]),
                tags={str(k): str(v) for k, v in s["tags"].items()},
                stage=int(s["stage"]),
                status=str(s["status"]),
                stage_started=float(s["stage_started"]),
                last_safe=int(s["last_safe"]),
                retries_used=int(s["retries_used"]),
                gates=gates,
            )
        return rollout

    def summary(self) -> dict[str, Any]:
        """Each slice's stage, share and status (for the API and the dashboard)."""
        return {
            "route": self.config.route,
            "status": self.status,
            "reason": self.reason,
            "slices": {
                s.name: {"stage": s.stage, "share": self.share(s), "status": s.status}
                for s in self.slices.values()
            },
        }

    def share(self, s: SliceState) -> float:
        if s.status == SLICE_PINNED:
            return 0.0
        c = self.config
        return c.target if s.stage >= len(c.stages) else c.stages[s.stage]

    # --- the look -----------------------------------------------------------------------------

    def tick(self, now: float, evidence: Evidence, actions: Actions) -> list[DecisionRecord]:
        """Add the evidence since the last look, decide per slice, apply, and say what was done.

        A finished rollout (aborted, rolled back, gave up) decides nothing more."""
        if self.status in (ABORTED, ROLLED_BACK, GAVE_UP):
            return []
        if not math.isfinite(now):
            raise ValueError("now must be a finite time")
        for ev in evidence.slices:  # all checked before any is added: a bad look changes nothing
            self._check(ev)
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        out: list[DecisionRecord] = []
        if not self.begun:
            self.begun = True
            if self.config.slice_keys:  # slices not seen yet stay on the incumbent
                c = self.config
                actions.set_weights(c.route, {c.incumbent: 1.0, c.candidate: 0.0}, None)
        if evidence.abort is not None or evidence.breaker_open:
            why = (
                f"aborted: {evidence.abort}"
                if evidence.abort is not None
                else "the candidate's breaker opened"
            )
            return self._all_to_incumbent(
                at, actions, ABORTED if evidence.abort is not None else ROLLED_BACK, why
            )
        for ev in evidence.slices:
            s = self._slice_for(ev.tags, now, at, actions, out)
            self._add(s.gates, ev)
        for s in list(self.slices.values()):
            if s.status == SLICE_PINNED:
                continue
            rec = self._decide(s, now, at, actions)
            if rec is not None:
                out.append(rec)
        self._sync_shadow(actions)
        self._settle(at, out)
        return out

    def _slice_for(
        self,
        tags: Mapping[str, str],
        now: float,
        at: dt.datetime,
        actions: Actions,
        out: list[DecisionRecord],
    ) -> SliceState:
        c = self.config
        name = slice_name(tags, c.slice_keys)
        if name not in self.slices and (len(self.slices) >= c.max_slices - 1 or not c.slice_keys):
            name = DEFAULT_SLICE
        if name in self.slices:
            return self.slices[name]
        own = {k: str(tags.get(k, "")) for k in c.slice_keys} if name != DEFAULT_SLICE else {}
        s = SliceState(name, own, 0, SLICE_RUNNING, now, -1, 0, SliceGates(c.gates))
        self.slices[name] = s
        self._apply_share(s, actions)
        out.append(self._record(at, s, "start", 0, 0, "first evidence for this slice", {}))
        return s

    def _check(self, ev: SliceEvidence) -> None:
        counts: tuple[int, ...] = (ev.wins, ev.ties, ev.losses)
        for arm in (ev.candidate, ev.incumbent):
            counts += (arm.calls, arm.errors)
            if arm.errors > arm.calls:
                raise ValueError("a side cannot have more errors than calls")
            if not (math.isfinite(arm.cost_usd) and arm.cost_usd >= 0):
                raise ValueError("costs must be finite and >= 0")
            times = np.asarray((*arm.latencies_ms, *arm.ttfts_ms), np.float64)
            if not np.all(np.isfinite(times)):
                raise ValueError("latencies must be finite")
            lo, hi = self.config.gates.feedback_range
            if any(not (lo <= f <= hi) for f in arm.feedback):  # NaN fails too
                raise ValueError(f"feedback values must lie in [{lo}, {hi}]")
        if any(not isinstance(n, int) or n < 0 for n in counts):
            raise ValueError("counts must be whole numbers >= 0")

    def _add(self, g: SliceGates, ev: SliceEvidence) -> None:
        c = self.config.gates
        if ev.wins or ev.ties or ev.losses:
            g.add_judgements(ev.wins, ev.ties, ev.losses)
        for candidate, arm in ((True, ev.candidate), (False, ev.incumbent)):
            if arm.calls:
                lat = np.asarray(arm.latencies_ms, np.float64)
                ttft = np.asarray(arm.ttfts_ms, np.float64)
                over = int(np.count_nonzero(lat > c.latency_p95_ms)) if c.latency_p95_ms else 0
                t_over = int(np.count_nonzero(ttft > c.ttft_p95_ms)) if c.ttft_p95_ms else 0
                g.add_calls(
                    candidate,
                    arm.calls,
                    arm.errors,
                    arm.cost_usd,
                    latency_over=over,
                    ttft_count=ttft.size,
                    ttft_over=t_over,
                )
            if arm.feedback:
                x = g.scale_feedback(list(arm.feedback))
                g.add_feedback(candidate, x.size, float(x.sum()), float((x * x).sum()))

    def _decide(
        self, s: SliceState, now: float, at: dt.datetime, actions: Actions
    ) -> DecisionRecord | None:
        c = self.config
        d = s.gates.decision(now - s.stage_started)
        evidence = d.as_dict()
        stage = s.stage
        if d.action == Action.HOLD:
            return None
        if d.action == Action.ADVANCE:
            if s.status == SLICE_PROMOTED:  # watched at the target: a new watch window
                self._restart(s, now)
                return None
            s.last_safe = stage
            self._restart(s, now)
            s.stage = stage + 1
            if s.stage >= len(c.stages):
                s.status = SLICE_PROMOTED
                action = "promote"
            else:
                action = "advance"
            self._apply_share(s, actions)
            return self._record(at, s, action, stage, s.stage, d.reason, evidence)
        if d.action == Action.ROLLBACK:
            if s.retries_used < c.retries and s.last_safe >= 0:
                s.retries_used += 1
                s.stage = s.last_safe
                s.status = SLICE_RUNNING
                s.last_safe = s.stage - 1
                self._restart(s, now)
                self._apply_share(s, actions)
                return self._record(at, s, "rollback", stage, s.stage, d.reason, evidence)
            self._pin(s, actions)
            return self._record(at, s, "pin", stage, -1, d.reason, evidence)
        # GIVE_UP; a promoted slice never gives up (its watch just goes on)
        if s.status == SLICE_PROMOTED:
            self._restart(s, now)
            return None
        self._pin(s, actions)
        return self._record(at, s, "give_up", stage, -1, d.reason, evidence)

    def _restart(self, s: SliceState, now: float) -> None:
        s.gates.reset()
        s.stage_started = now

    def _pin(self, s: SliceState, actions: Actions) -> None:
        s.status = SLICE_PINNED
        c = self.config
        if s.name == DEFAULT_SLICE:
            actions.set_weights(c.route, {c.incumbent: 1.0}, None)
        else:
            actions.pin_slice(c.route, s.tags, c.incumbent)

    def _apply_share(self, s: SliceState, actions: Actions) -> None:
        c = self.config
        share = self.share(s)
        weights = {c.incumbent: round(1.0 - share, 9), c.candidate: share}
        actions.set_weights(c.route, weights, None if s.name == DEFAULT_SLICE else s.tags)

    def _sync_shadow(self, actions: Actions) -> None:
        """Shadow copies while any slice is in the shadow stage (stage share 0)."""
        c = self.config
        want = any(
            s.status == SLICE_RUNNING and c.stages[s.stage] == 0.0 for s in self.slices.values()
        )
        if want != self.shadow_on:
            actions.set_shadow_sample(c.route, c.candidate, c.shadow_sample if want else 0.0)
            self.shadow_on = want

    def _all_to_incumbent(
        self, at: dt.datetime, actions: Actions, status: str, why: str
    ) -> list[DecisionRecord]:
        c = self.config
        actions.set_weights(c.route, {c.incumbent: 1.0}, None)
        for s in self.slices.values():
            if s.name != DEFAULT_SLICE and s.status != SLICE_PINNED:
                actions.pin_slice(c.route, s.tags, c.incumbent)
        if self.shadow_on:
            actions.set_shadow_sample(c.route, c.candidate, 0.0)
            self.shadow_on = False
        out = [
            self._record(at, s, "abort" if status == ABORTED else "rollback", s.stage, -1, why, {})
            for s in self.slices.values()
            if s.status != SLICE_PINNED
        ]
        for s in self.slices.values():
            s.status = SLICE_PINNED
        if not out:
            out = [DecisionRecord(at, c.route, DEFAULT_SLICE, "abort", -1, -1, 0.0, why, {})]
        self.status = status
        self.reason = why
        return out

    def _settle(self, at: dt.datetime, out: list[DecisionRecord]) -> None:
        """The rollout's status from its slices'."""
        states = [s.status for s in self.slices.values()]
        if not states or SLICE_RUNNING in states:
            self.status = RUNNING
            return
        if SLICE_PROMOTED in states:
            status = PROMOTED
        elif any(r.action == "give_up" for r in out):
            status = GAVE_UP
        else:
            status = ROLLED_BACK
        if status != self.status:
            self.status = status
            pinned = [s.name for s in self.slices.values() if s.status == SLICE_PINNED]
            self.reason = status + (
                f"; pinned to the incumbent: {', '.join(pinned)}" if pinned else ""
            )

    def _record(
        self,
        at: dt.datetime,
        s: SliceState,
        action: str,
        from_stage: int,
        to_stage: int,
        reason: str,
        evidence: dict[str, Any],
    ) -> DecisionRecord:
        return DecisionRecord(
            at,
            self.config.route,
            s.name,
            action,
            from_stage,
            to_stage,
            self.share(s),
            reason,
            json_safe(evidence),
        )


# --- persistence --------------------------------------------------------------------------------


class RolloutStore(Protocol):
    """Where rollouts' states and decisions are kept (``capture.rollouts.RolloutTable``)."""

    async def load(self, route: str) -> dict[str, Any] | None:
        """The route's rollout state as saved, or None."""

    async def save(
        self, route: str, state: dict[str, Any], status: str, decisions: list[dict[str, Any]]
    ) -> None:
        """Store the state and append the decisions, at once."""


async def step(
    rollout: Rollout, now: float, evidence: Evidence, actions: Actions, store: RolloutStore
) -> list[DecisionRecord]:
    """One look: tick, then save the state and the decisions (the decisions are already applied;
    saving after applying means a crash in between repeats an idempotent weight change)."""
    records = rollout.tick(now, evidence, actions)
    await store.save(
        rollout.config.route, rollout.state(), rollout.status, [r.as_dict() for r in records]
    )
    return records
