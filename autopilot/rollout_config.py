"""What a rollout is asked to do: its route, incumbent and candidate, its stages and target
share, its slices and its gates (``RolloutConfig``), checked when made and kept as plain JSON
with the rollout's state (``autopilot.controller.Rollout``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from autopilot.gates import StageGates


@dataclass(frozen=True)
class RolloutConfig:
    route: str
    incumbent: str
    candidate: str
    stages: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5)
    """The candidate's share at each gated stage; 0.0 is shadow (the candidate answers copies)."""
    target: float = 0.9
    holdout: float = 0.1
    """The share kept on the incumbent (teacher data for the next student): target <= 1 - it."""
    shadow_sample: float = 0.2
    slice_keys: tuple[str, ...] = ()
    max_slices: int = 1
    retries: int = 0
    """How many times a slice may go back to its last safe stage before it is pinned."""
    gates: StageGates = field(default_factory=StageGates)

    def __post_init__(self) -> None:
        if not self.route or not self.incumbent or not self.candidate:
            raise ValueError("a rollout needs a route, an incumbent and a candidate")
        if self.incumbent == self.candidate:
            raise ValueError("the candidate must differ from the incumbent")
        if not self.stages:
            raise ValueError("a rollout needs at least one stage")
        shares = (*self.stages, self.target)
        if any(not 0.0 <= s <= 1.0 for s in shares) or list(shares) != sorted(shares):
            raise ValueError("stage shares must lie in [0, 1] and increase up to the target")
        if not 0.0 <= self.holdout < 1.0 or self.target > 1.0 - self.holdout + 1e-12:
            raise ValueError("need 0 <= holdout < 1 and target <= 1 - holdout")
        if not 0.0 <= self.shadow_sample <= 1.0:
            raise ValueError("shadow_sample must lie in [0, 1]")
        if self.max_slices < 1 or (not self.slice_keys and self.max_slices != 1):
            raise ValueError("max_slices must be >= 1, and 1 without slice_keys")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.gates.slices != self.max_slices:
            object.__setattr__(self, "gates", _replace_slices(self.gates, self.max_slices))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = list(self.stages)
        out["slice_keys"] = list(self.slice_keys)
        out["gates"] = _gates_dict(self.gates)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown rollout settings: {', '.join(sorted(unknown))}")
        kwargs = dict(data)
        if "stages" in kwargs:
            kwargs["stages"] = tuple(float(s) for s in kwargs["stages"])
        if "slice_keys" in kwargs:
            kwargs["slice_keys"] = tuple(str(k) for k in kwargs["slice_keys"])
        if "gates" in kwargs:
            g = dict(kwargs["gates"])
            gknown = {f.name for f in fields(StageGates)}
            if set(g) - gknown:
                raise ValueError(f"unknown gate settings: {', '.join(sorted(set(g) - gknown))}")
            if "feedback_range" in g:
                g["feedback_range"] = tuple(g["feedback_range"])
            for name in ("max_duration_s",):
                if g.get(name) is None and name in g:
                    g[name] = float("inf")
            kwargs["gates"] = StageGates(**g)
        return cls(**kwargs)


def _replace_slices(gates: StageGates, slices: int) -> StageGates:
    values = {f.name: getattr(gates, f.name) for f in fields(StageGates)}
    values["slices"] = slices
    return StageGates(**values)


def _gates_dict(gates: StageGates) -> dict[str, Any]:
    out = {f.name: getattr(gates, f.name) for f in fields(StageGates)}
    out["feedback_range"] = list(gates.feedback_range)
    if math.isinf(gates.max_duration_s):
        out["max_duration_s"] = None
    return out
