"""The route table and the routing decision: pure, no I/O."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from router.config import RouteConfig


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    provider: str
    upstream_model: str
    weight: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one call goes."""

    route: str
    variant: str
    provider: str
    upstream_model: str


class Route:
    """A model name the app sends and its variants, sampled by weight."""

    __slots__ = ("_cumulative", "_single", "_total", "name", "variants")

    def __init__(self, name: str, variants: list[Variant]) -> None:
        self.name = name
        self.variants = {v.name: v for v in variants}
        active = [v for v in variants if v.weight > 0]
        if not active:
            raise ValueError(f"route {name!r} has no variant with a weight above 0")
        self._cumulative: list[tuple[int, Variant]] = []
        total = 0
        for variant in active:
            total += variant.weight
            self._cumulative.append((total, variant))
        self._total = total
        self._single = (
            Decision(name, active[0].name, active[0].provider, active[0].upstream_model)
            if len(active) == 1
            else None
        )

    def choose(self, rng: random.Random | None = None) -> Decision:
        """A variant drawn with probability proportional to its weight."""
        if self._single is not None:
            return self._single
        point = (rng or random).randrange(self._total)
        for bound, variant in self._cumulative:
            if point < bound:
                return Decision(self.name, variant.name, variant.provider, variant.upstream_model)
        raise AssertionError("unreachable: point below total weight")


class RouteTable:
    """Model name -> route."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)

    @classmethod
    def from_config(cls, routes: Mapping[str, RouteConfig]) -> RouteTable:
        return cls(
            {
                name: Route(
                    name,
                    [
                        Variant(vname, v.provider, v.model, v.weight)
                        for vname, v in route.variants.items()
                    ],
                )
                for name, route in routes.items()
            }
        )

    def get(self, model: str) -> Route | None:
        return self._routes.get(model)

    def names(self) -> list[str]:
        return list(self._routes)
