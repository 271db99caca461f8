"""One controller across replicas: every replica looks, only the lease's holder decides.

`Controller.look(route, now, gather, actions)` is what the gateway calls every few seconds on
every replica. It takes or renews the lease (``capture.lease``); without it, it does nothing and
returns None. With it, it loads the route's rollout from the store (every look: another replica
may have held the lease and moved it, or a new rollout may have been started), and only then
gathers the evidence, ``gather(config, cursor)``: the evidence since ``cursor`` and the cursor
after it. The cursor is saved in the rollout's state beside the rollout's own numbers, so the
evidence a holder counted is never counted again by its successor, and none is lost when the
lease moves (a replica that is not the holder gathers nothing). Then it ticks the rollout,
applies the decisions through ``actions`` and saves the state, the cursor and the decisions at
once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from autopilot.controller import (
    ABORTED,
    GAVE_UP,
    ROLLED_BACK,
    Actions,
    DecisionRecord,
    Evidence,
    Rollout,
    RolloutConfig,
    RolloutStore,
)
from capture.lease import Lease

FINISHED = (ABORTED, ROLLED_BACK, GAVE_UP)
CURSOR_KEY = "cursor"
"""Where the evidence reader's cursor is kept in the saved state (plain JSON, or None)."""

Gather = Callable[[RolloutConfig, Any], Awaitable[tuple[Evidence, Any]]]
"""``gather(config, cursor) -> (evidence since cursor, the cursor after it)``."""


def cursor_of(state: dict[str, Any]) -> Any:
    """The evidence cursor saved with a rollout's state (None before the first look)."""
    return state.get(CURSOR_KEY)


class Controller:
    def __init__(self, store: RolloutStore, lease: Lease, holder: str, ttl_s: float = 15.0):
        if not ttl_s > 0:
            raise ValueError("the lease's time-to-live must be > 0 seconds")
        self.store = store
        self.lease = lease
        self.holder = holder
        self.ttl_s = ttl_s
        self.holding = False
        """Whether the last look found this replica holding the lease."""
        self.seen: dict[str, Rollout] = {}
        """Each route's rollout as this replica's last look left it (holder only)."""

    async def start(self, config: RolloutConfig, now: float, cursor: Any = None) -> Rollout:
        """A new rollout of ``config.route`` (replacing a finished or running one), saved with
        the cursor its evidence starts from."""
        rollout = Rollout(config, now)
        await self.store.save(config.route, _with_cursor(rollout, cursor), rollout.status, [])
        return rollout

    async def acquire(self, now: float) -> bool:
        """Take or renew the lease; True when this replica holds it. ``self.holding`` says so
        too, so the caller sees when it has just taken over (False before, True now)."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        self.holding = await self.lease.acquire(self.holder, self.ttl_s, at)
        return self.holding

    async def look(
        self, route: str, now: float, gather: Gather, actions: Actions
    ) -> list[DecisionRecord] | None:
        """Decide if this replica holds the lease: the decisions (None: not the holder, or the
        route has no rollout; [] for a finished rollout, which gathers nothing)."""
        if not await self.acquire(now):
            return None
        state = await self.store.load(route)
        if state is None:
            return None
        rollout = Rollout.from_state(state)
        self.seen[route] = rollout
        if rollout.status in FINISHED:
            return []
        evidence, cursor = await gather(rollout.config, cursor_of(state))
        records = rollout.tick(now, evidence, actions)
        # Saved after applying: a crash in between repeats an idempotent weight change and
        # gathers the same evidence again, never some of it twice.
        await self.store.save(
            route, _with_cursor(rollout, cursor), rollout.status, [r.as_dict() for r in records]
        )
        return records

    async def stop(self, now: float) -> None:
        """Hand the lease over at once (shutdown)."""
        self.holding = False
        await self.lease.release(self.holder, dt.datetime.fromtimestamp(now, dt.UTC))


def _with_cursor(rollout: Rollout, cursor: Any) -> dict[str, Any]:
    state = rollout.state()
    state[CURSOR_KEY] = cursor
    return state
