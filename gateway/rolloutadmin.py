"""The admin API's rollout endpoints (under /admin, with the admin key: see gateway/admin.py).

- ``GET /admin/rollouts``: every route's rollout: status, each slice's stage, share, status;
- ``GET /admin/routes/{route}/rollout``: one rollout: its configuration, each slice's gates as
  they stand (statistics, bounds, sample sizes), the last 50 decisions, who decides;
- ``POST /admin/routes/{route}/rollout``: start one (body: ``routes.R.rollout``'s fields);
  409 while one is running;
- ``DELETE /admin/routes/{route}/rollout?reason=...``: abort it: 202; the deciding replica
  returns the traffic to the incumbent at its next look.

Any replica answers: starting and aborting only write the store, which the lease's holder reads
at every look. Refusals (`gateway.rollouts.RolloutError`) have the admin API's error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.rollouts import RolloutError, RolloutService
from router.config import RouteRollout

ABORT_REASON_MAX = 500


def build_rollout_admin(service: Callable[[], RolloutService | None]) -> APIRouter:
    """The rollout endpoints, for ``build_admin`` to include under its prefix and key check."""
    router = APIRouter()

    def running() -> RolloutService:
        current = service()
        if current is None:
            raise RolloutError(
                409,
                "Rollouts need the capture database and the autopilot (capture is disabled, or "
                "autopilot.enabled is false).",
                "no_autopilot",
            )
        return current

    @router.get("/rollouts")
    async def list_rollouts() -> dict[str, Any]:
        return {"rollouts": await running().describe_all()}

    @router.get("/routes/{route}/rollout")
    async def get_rollout(route: str) -> dict[str, Any]:
        return await running().describe(route)

    @router.post("/routes/{route}/rollout", status_code=201)
    async def start_rollout(route: str, plan: RouteRollout) -> dict[str, Any]:
        return await running().begin(route, plan)

    @router.delete("/routes/{route}/rollout", status_code=202)
    async def abort_rollout(route: str, reason: str = "aborted through the admin API") -> Any:
        reason = reason.strip() or "aborted through the admin API"
        if len(reason) > ABORT_REASON_MAX:
            raise RolloutError(
                400, f"`reason` is longer than {ABORT_REASON_MAX} characters.", "invalid_reason"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in reason):
            # NUL is refused by PostgreSQL's text, a newline would forge a log line
            raise RolloutError(400, "`reason` may not hold control characters.", "invalid_reason")
        return JSONResponse(await running().abort(route, reason), status_code=202)

    return router
