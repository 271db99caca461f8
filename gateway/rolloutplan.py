"""A route's configured rollout (``routes.R.rollout``, or the admin API's body) as the
controller's ``autopilot.controller.RolloutConfig``: the route named, the incumbent resolved
(the variant with the largest weight when unset), every check of the controller applied.

Kept apart from ``gateway.rollouts`` (the service) so the settings can check a configuration
without the service, and apart from ``gateway.settings`` so numpy is loaded only when a
rollout is configured.
"""

from __future__ import annotations

from autopilot.controller import RolloutConfig
from autopilot.gates import StageGates
from router.config import RolloutGates, RouteConfig, RouteRollout


def stage_gates(gates: RolloutGates) -> StageGates:
    values = gates.model_dump()
    values["feedback_range"] = tuple(values["feedback_range"])
    if values["max_duration_s"] is None:
        values["max_duration_s"] = float("inf")
    return StageGates(**values)


def rollout_config(route: str, config: RouteConfig, plan: RouteRollout) -> RolloutConfig:
    """The controller's configuration; ValueError saying what is wrong."""
    incumbent = plan.incumbent_in(config.variants)
    for role, name in (("candidate", plan.candidate), ("incumbent", incumbent)):
        if name not in config.variants:
            known = ", ".join(config.variants)
            raise ValueError(f"{role}: unknown variant {name!r} (this route has: {known})")
    return RolloutConfig(
        route=route,
        incumbent=incumbent,
        candidate=plan.candidate,
        stages=tuple(plan.stages),
        target=plan.target,
        holdout=plan.holdout,
        shadow_sample=plan.shadow_sample,
        slice_keys=tuple(plan.slice_keys),
        max_slices=plan.max_slices,
        retries=plan.retries,
        gates=stage_gates(plan.gates),
    )
