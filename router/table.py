"""The route table and the routing decision: pure, no I/O.

A route splits its calls by its variants' weights; a route with ``slices`` first looks for the
first slice whose ``match`` pairs the call's tags all hold and splits by that slice's weights
(sticky users stay put within a slice's weights, by the same rendezvous hash). A route with
``counterfactual`` copies a sample of the calls its candidate answers to the incumbent. Routes
without slices pay nothing for them: the decision is the same code as before, behind one ``if``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from router.config import (
    BreakerConfig,
    CounterfactualConfig,
    RetryConfig,
    RouteConfig,
    ShadowConfig,
)
from router.sticky import pick

COUNTERFACTUAL = "counterfactual"
"""``Plan.shadow_purpose`` of a counterfactual copy."""


class UnknownVariant(LookupError):
    """A forced variant the route does not have."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one call goes."""

    route: str
    variant: str
    provider: str
    upstream_model: str
    timeout: float | None = None
    max_tokens: int | None = None
    """The variant's default ``max_tokens`` for an Anthropic provider (see VariantConfig)."""


class Plan(NamedTuple):
    """The chosen variant, the fallbacks after it, and a shadow to copy the call to, if any.

    A named tuple: made on every call, and a tuple is made in about half the time of a frozen
    dataclass."""

    primary: Decision
    fallbacks: tuple[Decision, ...]
    shadow: Decision | None
    shadow_purpose: str | None = None
    """``COUNTERFACTUAL`` when the shadow is the route's counterfactual copy, else None."""

    def chain(self) -> tuple[Decision, ...]:
        return (self.primary, *self.fallbacks)


class _Split:
    """One way of dividing calls between variants: by weight, or by the user's hash."""

    __slots__ = ("active", "cumulative", "single", "total")

    def __init__(
        self, active: tuple[tuple[str, int], ...], decisions: Mapping[str, Decision]
    ) -> None:
        self.active = active
        self.cumulative: list[tuple[int, Decision]] = []
        total = 0
        for vname, weight in active:
            total += weight
            self.cumulative.append((total, decisions[vname]))
        self.total = total
        self.single = decisions[active[0][0]] if len(active) == 1 else None


class _Slice:
    __slots__ = ("match", "split")

    def __init__(self, match: tuple[tuple[str, str], ...], split: _Split) -> None:
        self.match = match
        self.split = split


class Route:
    """A model name the app sends and its variants."""

    __slots__ = (
        "_active",
        "_cumulative",
        "_extended",
        "_fallbacks",
        "_single",
        "_slices",
        "_total",
        "breaker",
        "cache",
        "capture",
        "config",
        "counterfactual",
        "decisions",
        "has_slices",
        "name",
        "redact",
        "retry",
        "shadow",
        "sticky",
    )

    def __init__(self, name: str, config: RouteConfig) -> None:
        self.name = name
        self.config = config
        self.decisions = {
            vname: Decision(name, vname, v.provider, v.model, v.timeout, v.max_tokens)
            for vname, v in config.variants.items()
        }
        # A shadow variant (unless ``shadow.live``) only ever answers copies, so it takes no share
        # of the live traffic.
        copies_only = config.answers_copies_only()
        self._active = tuple(
            (vname, v.weight)
            for vname, v in config.variants.items()
            if v.weight > 0 and vname != copies_only
        )
        if not self._active:
            raise ValueError(f"route {name!r} has no variant with a weight above 0")
        default = _Split(self._active, self.decisions)
        self._cumulative = default.cumulative
        self._total = default.total
        self._single = default.single
        slices: list[_Slice] = []
        for routing in config.slices:
            active = tuple(
                (vname, w) for vname, w in routing.weights.items() if w > 0 and vname != copies_only
            )
            if not active:
                raise ValueError(f"route {name!r}: slice {routing.match} has no live variant")
            slices.append(_Slice(tuple(routing.match.items()), _Split(active, self.decisions)))
        self._slices = tuple(slices)
        self.has_slices = bool(slices)
        self._extended = self.has_slices or config.counterfactual is not None
        """Whether the decision reads the call's tags (the caller parses them only then)."""
        self.counterfactual: CounterfactualConfig | None = config.counterfactual
        self._fallbacks = tuple(self.decisions[f] for f in config.fallbacks)
        self.sticky = config.sticky == "user"
        self.shadow: ShadowConfig | None = config.shadow
        self.retry: RetryConfig = config.retry
        self.breaker: BreakerConfig = config.breaker
        self.capture = config.capture
        self.cache = config.cache
        self.redact = tuple(config.redact) if config.redact is not None else None

    def choose(self, user: str | None = None, rng: random.Random | None = None) -> Decision:
        """The variant for this call: by the user's hash when sticky, else drawn by weight."""
        if self._single is not None:
            return self._single
        if self.sticky and user:
            return self.decisions[pick(self.name, user, self._active)]
        point = (rng or random).randrange(self._total)
        for bound, decision in self._cumulative:
            if point < bound:
                return decision
        raise AssertionError("unreachable: point below total weight")

    def slice_of(self, tags: Mapping[str, str]) -> int | None:
        """The index of the first slice whose match the tags hold, or None (default weights)."""
        for index, routing in enumerate(self._slices):
            if all(tags.get(key) == value for key, value in routing.match):
                return index
        return None

    def _choose_in(self, split: _Split, user: str | None, rng: random.Random | None) -> Decision:
        if split.single is not None:
            return split.single
        if self.sticky and user:
            return self.decisions[pick(self.name, user, split.active)]
        point = (rng or random).randrange(split.total)
        for bound, decision in split.cumulative:
            if point < bound:
                return decision
        raise AssertionError("unreachable: point below total weight")

    def plan(
        self,
        user: str | None = None,
        forced: str | None = None,
        rng: random.Random | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Plan:
        if self._extended:  # slices or a counterfactual; the plain path below is unchanged
            return self._extended_plan(user, forced, rng, tags)
        if forced is not None:
            primary = self.decisions.get(forced)
            if primary is None:
                raise UnknownVariant(forced)
        else:
            primary = self.choose(user, rng)
        fallbacks = tuple(d for d in self._fallbacks if d is not primary)
        shadow = None
        if self.shadow is not None and self.shadow.variant != primary.variant:
            sample = self.shadow.sample
            if sample >= 1.0 or (sample > 0.0 and (rng or random).random() < sample):
                shadow = self.decisions[self.shadow.variant]
        return Plan(primary, fallbacks, shadow)

    def _extended_plan(
        self,
        user: str | None,
        forced: str | None,
        rng: random.Random | None,
        tags: Mapping[str, str] | None,
    ) -> Plan:
        if forced is not None:
            primary = self.decisions.get(forced)
            if primary is None:
                raise UnknownVariant(forced)
        elif self._slices and tags:
            index = self.slice_of(tags)
            if index is None:
                primary = self.choose(user, rng)
            else:
                primary = self._choose_in(self._slices[index].split, user, rng)
        else:
            primary = self.choose(user, rng)
        fallbacks = tuple(d for d in self._fallbacks if d is not primary)
        counterfactual = self.counterfactual
        if counterfactual is not None and counterfactual.of == primary.variant:
            sample = counterfactual.sample
            if sample >= 1.0 or (sample > 0.0 and (rng or random).random() < sample):
                copy = self.decisions[counterfactual.variant]
                return Plan(primary, fallbacks, copy, COUNTERFACTUAL)
        shadow = None
        if self.shadow is not None and self.shadow.variant != primary.variant:
            sample = self.shadow.sample
            if sample >= 1.0 or (sample > 0.0 and (rng or random).random() < sample):
                shadow = self.decisions[self.shadow.variant]
        return Plan(primary, fallbacks, shadow)


class RouteTable:
    """Model name (route name or alias) -> route."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)
        self._by_model: dict[str, Route] = {}
        for route in routes.values():
            for alias in route.config.aliases:
                self._by_model[alias] = route
        self._by_model.update(self._routes)

    @classmethod
    def from_config(cls, routes: Mapping[str, RouteConfig]) -> RouteTable:
        return cls({name: Route(name, config) for name, config in routes.items()})

    def get(self, model: str) -> Route | None:
        return self._by_model.get(model)

    def names(self) -> list[str]:
        """Every model name the table answers: the routes, then their aliases."""
        return list(self._routes) + [m for m in self._by_model if m not in self._routes]

    def routes(self) -> dict[str, Route]:
        return dict(self._routes)
