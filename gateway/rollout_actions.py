"""The rollout controller's hands: `autopilot.controller.Actions` over the gateway's routes.

The controller speaks in shares (floats); routes take integer weights, so a split becomes
weights out of ``SCALE`` (10,000: a share's resolution is 0.01%), rounded by largest remainder
so they sum to exactly ``SCALE``. Every change is validated and applied here at once, the way the
admin API applies one (gateway/routechange.py); ``flush()`` then shares the routes changed since
the last flush through Redis, so that every replica has them within a second. The service that
runs the controller calls ``flush()`` after each look.

While a rollout runs, its weights are the whole split:
- ``set_weights(route, shares, None)`` sets the variants' own weights, and a variant it does not
  name gets weight 0 (it answers no live call until a later split names it);
- with a slice it sets, or replaces, the route's ``slices`` entry whose ``match`` is the slice's
  tags; ``pin_slice`` is such an entry with one variant;
- any shadow of the route is made ``live``: the candidate keeps the share its weights give it
  while it also answers copies of the incumbent's calls (the shadow stage of one slice can
  overlap a live stage of another).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from gateway.routechange import InvalidRouteChange, apply_route, share_route, validated_route
from gateway.runtime import RuntimeManager
from gateway.sync import RouteSync
from router.config import RouteConfig

SCALE = 10_000


def integer_weights(shares: Mapping[str, float], scale: int = SCALE) -> dict[str, int]:
    """Shares as integer weights summing to ``scale`` (largest remainder; ties in given order).

    InvalidRouteChange for a negative or non-finite share, or shares that are all 0."""
    if not shares:
        raise InvalidRouteChange("no variant given a share")
    for name, share in shares.items():
        if not math.isfinite(share) or share < 0:
            raise InvalidRouteChange(f"variant {name!r}: share {share!r} is not a number >= 0")
    total = math.fsum(shares.values())
    if total <= 0:
        raise InvalidRouteChange("at least one variant needs a share above 0")
    exact = {name: share / total * scale for name, share in shares.items()}
    weights = {name: math.floor(value) for name, value in exact.items()}
    left = scale - sum(weights.values())
    order = sorted(exact, key=lambda name: weights[name] - exact[name])  # largest remainder first
    for name in order[:left]:
        weights[name] += 1
    return weights


class GatewayActions:
    """`autopilot.controller.Actions` applied to this gateway's routes (and, on flush, shared)."""

    def __init__(self, manager: RuntimeManager, sync: Callable[[], RouteSync | None]) -> None:
        self._manager = manager
        self._sync = sync
        self._changed: set[str] = set()

    # --- the controller's Actions ---------------------------------------------------------------

    def set_weights(
        self, route: str, weights: Mapping[str, float], slice: Mapping[str, str] | None
    ) -> None:
        current = self._route(route)
        self._known(route, current, weights)
        split = integer_weights(weights)
        update = current.model_dump()
        if slice is None:
            for name, variant in update["variants"].items():
                variant["weight"] = split.get(name, 0)
        else:
            self._set_slice(update, slice, split)
        self._change(route, update)

    def pin_slice(self, route: str, slice: Mapping[str, str], variant: str) -> None:
        current = self._route(route)
        self._known(route, current, {variant: 1.0})
        update = current.model_dump()
        self._set_slice(update, slice, {variant: SCALE})
        self._change(route, update)

    def set_shadow_sample(self, route: str, variant: str, rate: float) -> None:
        current = self._route(route)
        self._known(route, current, {variant: 1.0})
        if not 0.0 <= rate <= 1.0:
            raise InvalidRouteChange(f"shadow sample {rate!r} is not in [0, 1]")
        update = current.model_dump()
        if rate == 0.0:
            update["shadow"] = None
        else:
            shadow = dict(update["shadow"] or {})
            shadow.update(variant=variant, sample=rate)
            update["shadow"] = shadow
        self._change(route, update)

    # --- beyond the protocol --------------------------------------------------------------------

    def set_counterfactual(self, route: str, of: str, variant: str, sample: float) -> None:
        """Copy ``sample`` of the calls ``of`` answers to ``variant``, marked counterfactual;
        a sample of 0 removes the counterfactual."""
        current = self._route(route)
        self._known(route, current, {of: 1.0, variant: 1.0})
        update = current.model_dump()
        if sample == 0.0:
            update["counterfactual"] = None
        else:
            update["counterfactual"] = {"of": of, "variant": variant, "sample": sample}
        self._change(route, update)

    async def flush(self) -> None:
        """Share every route changed since the last flush with the other replicas."""
        changed, self._changed = self._changed, set()
        shared = self._sync()
        for route in sorted(changed):
            config = self._manager.settings.routes.get(route)
            if config is not None:
                await share_route(shared, route, config)

    # --- helpers --------------------------------------------------------------------------------

    def _route(self, route: str) -> RouteConfig:
        current = self._manager.settings.routes.get(route)
        if current is None:
            raise InvalidRouteChange(f"no route named {route!r}")
        return current

    @staticmethod
    def _known(route: str, current: RouteConfig, names: Mapping[str, float]) -> None:
        unknown = [name for name in names if name not in current.variants]
        if unknown:
            have = ", ".join(current.variants)
            raise InvalidRouteChange(f"route {route!r} has no variant {unknown[0]!r} (has: {have})")

    @staticmethod
    def _set_slice(update: dict[str, Any], slice: Mapping[str, str], split: dict[str, int]) -> None:
        match = {str(k): str(v) for k, v in slice.items()}
        if not match:
            raise InvalidRouteChange("a slice needs at least one tag")
        entry = {"match": match, "weights": split}
        slices: list[dict[str, Any]] = update["slices"]
        for index, existing in enumerate(slices):
            if existing["match"] == match:
                slices[index] = entry
                return
        slices.append(entry)

    def _change(self, route: str, update: dict[str, Any]) -> None:
        if update.get("shadow") is not None:
            update["shadow"] = {**update["shadow"], "live": True}
        config = validated_route(update)
        apply_route(self._manager, route, config)
        self._changed.add(route)
