"""The route table and the routing decision: pure, no I/O."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from router.config import BreakerConfig, RetryConfig, RouteConfig, ShadowConfig
from router.sticky import pick


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


@dataclass(frozen=True, slots=True)
class Plan:
    """The chosen variant, the fallbacks after it, and a shadow to copy the call to, if any."""

    primary: Decision
    fallbacks: tuple[Decision, ...]
    shadow: Decision | None

    def chain(self) -> tuple[Decision, ...]:
        return (self.primary, *self.fallbacks)


class Route:
    """A model name the app sends and its variants."""

    __slots__ = (
        "_active",
        "_cumulative",
        "_fallbacks",
        "_single",
        "_total",
        "breaker",
        "cache",
        "capture",
        "config",
        "decisions",
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
        shadow_name = config.shadow.variant if config.shadow else None
        # The shadow variant only ever answers copies, so it takes no share of the live traffic.
        self._active = tuple(
            (vname, v.weight)
            for vname, v in config.variants.items()
            if v.weight > 0 and vname != shadow_name
        )
        if not self._active:
            raise ValueError(f"route {name!r} has no variant with a weight above 0")
        self._cumulative: list[tuple[int, Decision]] = []
        total = 0
        for vname, weight in self._active:
            total += weight
            self._cumulative.append((total, self.decisions[vname]))
        self._total = total
        self._single = self.decisions[self._active[0][0]] if len(self._active) == 1 else None
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

    def plan(
        self,
        user: str | None = None,
        forced: str | None = None,
        rng: random.Random | None = None,
    ) -> Plan:
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
