"""The admin API: inspect routes, change weights and shadows live, reload the config file.

Needs an admin key (``admin.keys`` in the config). Changes apply to calls that start after them;
calls in flight finish on the configuration they started with. A change made here lives in this
process until the next reload, which re-reads the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.keys import KeySpec, VirtualKeys
from gateway.rolloutadmin import build_rollout_admin
from gateway.rollouts import RolloutService
from gateway.routechange import InvalidRouteChange, apply_route, share_route, validated_route
from gateway.runtime import RuntimeManager
from gateway.settings import ConfigError, Settings
from gateway.sync import RouteSync
from router.breaker import BreakerState
from router.config import ShadowConfig


class AdminDenied(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class RouteChange(BaseModel):
    """Body of PUT /admin/routes/{route}: the fields given are changed, the rest kept."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, int] | None = None
    """Variant -> weight; variants not named keep theirs."""
    shadow: ShadowConfig | None = Field(default=None)
    """A shadow to set; send ``"shadow": null`` to remove it."""


class NewKey(BaseModel):
    """Body of POST /admin/keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    routes: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    daily_budget_usd: float | None = Field(default=None, ge=0)
    monthly_budget_usd: float | None = Field(default=None, ge=0)
    allow_variant_override: bool = False


class NewVariant(BaseModel):
    """Body of POST /admin/routes/{route}/variants."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    provider: str
    model: str = Field(min_length=1)
    weight: int = Field(default=0, ge=0)
    timeout: float | None = Field(default=None, gt=0)


def describe(manager: RuntimeManager) -> dict[str, Any]:
    runtime = manager.current
    assert runtime is not None
    states = manager.breakers.states()
    routes: dict[str, Any] = {}
    for name, route in runtime.settings.routes.items():
        variants = {}
        for vname, variant in route.variants.items():
            state = states.get((variant.provider, variant.model), BreakerState.CLOSED)
            variants[vname] = {**variant.model_dump(), "breaker": state.value}
        routes[name] = {
            "variants": variants,
            "aliases": route.aliases,
            "sticky": route.sticky,
            "fallbacks": route.fallbacks,
            "shadow": route.shadow.model_dump() if route.shadow else None,
            "slices": [routing.model_dump() for routing in route.slices],
            "counterfactual": route.counterfactual.model_dump() if route.counterfactual else None,
            "retry": route.retry.model_dump(),
            "breaker": route.breaker.model_dump(),
            "capture": route.capture,
        }
    return {"routes": routes}


def build_admin(
    manager: RuntimeManager,
    config_path: Callable[[], Path | None],
    load: Callable[[Path], Settings],
    keys: Callable[[], VirtualKeys | None] = lambda: None,
    sync: Callable[[], RouteSync | None] = lambda: None,
    rollouts: Callable[[], RolloutService | None] = lambda: None,
) -> APIRouter:
    def require_admin(request: Request) -> None:
        admin = manager.settings.admin
        if admin is None:
            raise AdminDenied(
                403, "The admin API is disabled: no admin keys are configured.", "admin_disabled"
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AdminDenied(
                401, "Missing admin key: send 'Authorization: Bearer <key>'.", "missing_api_key"
            )
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        if digest not in {key.digest() for key in admin.keys}:
            raise AdminDenied(401, "Incorrect admin key provided.", "invalid_api_key")

    router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])

    @router.get("/routes")
    async def list_routes() -> dict[str, Any]:
        return describe(manager)

    @router.put("/routes/{route}")
    async def change_route(route: str, change: RouteChange) -> Any:
        settings = manager.settings
        current = settings.routes.get(route)
        if current is None:
            raise AdminDenied(404, f"No route named `{route}`.", "route_not_found")
        given = change.model_fields_set
        update: dict[str, Any] = current.model_dump()
        if change.weights:
            for vname, weight in change.weights.items():
                if vname not in current.variants:
                    raise AdminDenied(
                        400, f"Route `{route}` has no variant `{vname}`.", "unknown_variant"
                    )
                update["variants"][vname]["weight"] = weight
        if "shadow" in given:
            update["shadow"] = change.shadow.model_dump() if change.shadow else None
        await _apply(route, update)
        return describe(manager)["routes"][route]

    @router.post("/routes/{route}/variants", status_code=201)
    async def add_variant(route: str, new: NewVariant) -> Any:
        """Add a variant (e.g. a new fine-tune) to a route, at a weight (0: idle)."""
        settings = manager.settings
        current = settings.routes.get(route)
        if current is None:
            raise AdminDenied(404, f"No route named `{route}`.", "route_not_found")
        if new.name in current.variants:
            raise AdminDenied(
                409, f"Route `{route}` already has a variant `{new.name}`.", "variant_exists"
            )
        if new.provider not in settings.providers:
            known = ", ".join(settings.providers)
            raise AdminDenied(
                400, f"Unknown provider `{new.provider}` (configured: {known}).", "unknown_provider"
            )
        update = current.model_dump()
        update["variants"][new.name] = new.model_dump(exclude={"name"})
        await _apply(route, update)
        return describe(manager)["routes"][route]

    @router.delete("/routes/{route}/variants/{variant}")
    async def remove_variant(route: str, variant: str) -> Any:
        """Remove a variant that is neither the shadow nor a fallback of its route."""
        current = manager.settings.routes.get(route)
        if current is None or variant not in current.variants:
            raise AdminDenied(
                404, f"Route `{route}` has no variant `{variant}`.", "variant_not_found"
            )
        update = current.model_dump()
        del update["variants"][variant]
        await _apply(route, update)
        return describe(manager)["routes"][route]

    async def _apply(route: str, update: dict[str, Any]) -> None:
        """Make the change here, and on every other replica when they share a Redis."""
        try:
            new_route = validated_route(update)
        except InvalidRouteChange as exc:
            raise AdminDenied(400, str(exc), "invalid_route") from None
        apply_route(manager, route, new_route)
        await share_route(sync(), route, new_route)

    def key_store() -> VirtualKeys:
        current = keys()
        if current is None:
            raise AdminDenied(
                409, "Virtual keys need the capture database (capture is disabled).", "no_database"
            )
        return current

    @router.post("/keys", status_code=201)
    async def create_key(spec: NewKey) -> Any:
        """Make a virtual key; the answer holds the key itself, shown this once."""
        virtual = key_store()
        known = set(manager.settings.routes)
        unknown = sorted(set(spec.routes or []) - known)
        if unknown:
            raise AdminDenied(400, f"Unknown route(s): {', '.join(unknown)}.", "unknown_route")
        key, described = await virtual.store.create(KeySpec(**spec.model_dump()))
        await virtual.changed()
        return {**described, "key": key}

    @router.get("/keys")
    async def list_keys(include_revoked: bool = False) -> Any:
        return {"keys": await key_store().store.list(include_revoked)}

    @router.delete("/keys/{key}")
    async def revoke_key(key: str) -> Any:
        """Revoke by id or by name; every replica stops accepting it within a second (Redis)."""
        virtual = key_store()
        revoked = await virtual.store.revoke(key)
        if not revoked:
            raise AdminDenied(404, f"No active key with id or name `{key}`.", "key_not_found")
        await virtual.changed()
        return {"revoked": revoked}

    @router.post("/reload")
    async def reload() -> Any:
        path = config_path()
        if path is None:
            raise AdminDenied(
                409, "This gateway was not started from a config file.", "no_config_file"
            )
        try:
            settings = load(path)
        except ConfigError as exc:
            raise AdminDenied(
                400, f"The configuration was not reloaded: {exc}", "invalid_config"
            ) from None
        previous = manager.settings
        ignored = [key for key in ("server",) if getattr(settings, key) != getattr(previous, key)]
        manager.replace(settings)
        shared = sync()
        if shared is not None:
            await shared.share_reload()
        return {"reloaded": str(path), "routes": list(settings.routes), "needs_restart": ignored}

    router.include_router(build_rollout_admin(rollouts))
    return router
