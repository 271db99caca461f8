"""Changing one route while the gateway runs: validated, applied here, shared with the others.

The admin API and the rollout's actions change routes the same way: the new route is validated
as a whole (``RouteConfig``), made current in this process (calls in flight finish on the old
one), and, when the replicas share a Redis, stored and announced so every replica applies it
within a second (gateway/sync.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gateway.runtime import RuntimeManager
from gateway.sync import RouteSync
from router.config import RouteConfig


class InvalidRouteChange(ValueError):
    """A change that would leave the route invalid; the message says why."""


def validated_route(update: Mapping[str, Any]) -> RouteConfig:
    """The route ``update`` describes, or InvalidRouteChange with every problem."""
    try:
        return RouteConfig.model_validate(update)
    except ValidationError as exc:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise InvalidRouteChange(message) from None


def apply_route(manager: RuntimeManager, route: str, config: RouteConfig) -> None:
    """Make ``config`` the route's configuration in this process."""
    settings = manager.settings
    manager.replace(settings.model_copy(update={"routes": {**settings.routes, route: config}}))


async def share_route(sync: RouteSync | None, route: str, config: RouteConfig) -> None:
    """Tell the other replicas (nothing to do without a shared Redis)."""
    if sync is not None:
        await sync.share_route(route, config)
