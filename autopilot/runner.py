"""One controller across replicas: every replica looks, only the lease's holder decides.

`Controller.look(route, now, evidence, actions)` is what the gateway calls every few seconds on
every replica. It takes or renews the lease (``capture.lease``); without it, it does nothing and
returns None. With it, it loads the route's rollout from the store (every look: another replica
may have held the lease and moved it, or a new rollout may have been started), ticks it, applies
the decisions through ``actions`` and saves the state and decisions (`autopilot.controller.step`).
The evidence a replica gathered while it did not hold the lease is its own to keep or drop.
"""

from __future__ import annotations

import datetime as dt

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
    step,
)
from capture.lease import Lease

FINISHED = (ABORTED, ROLLED_BACK, GAVE_UP)


class Controller:
    def __init__(self, store: RolloutStore, lease: Lease, holder: str, ttl_s: float = 15.0):
        if not ttl_s > 0:
            raise ValueError("the lease's time-to-live must be > 0 seconds")
        self.store = store
        self.lease = lease
        self.holder = holder
        self.ttl_s = ttl_s

    async def start(self, config: RolloutConfig, now: float) -> Rollout:
        """A new rollout of ``config.route`` (replacing a finished or running one), saved."""
        rollout = Rollout(config, now)
        await self.store.save(config.route, rollout.state(), rollout.status, [])
        return rollout

    async def look(
        self, route: str, now: float, evidence: Evidence, actions: Actions
    ) -> list[DecisionRecord] | None:
        """Decide if this replica holds the lease: the decisions (None: not the holder, or the
        route has no rollout)."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        if not await self.lease.acquire(self.holder, self.ttl_s, at):
            return None
        state = await self.store.load(route)
        if state is None:
            return None
        rollout = Rollout.from_state(state)
        if rollout.status in FINISHED:
            return []
        return await step(rollout, now, evidence, actions, self.store)

    async def stop(self, now: float) -> None:
        """Hand the lease over at once (shutdown)."""
        await self.lease.release(self.holder, dt.datetime.fromtimestamp(now, dt.UTC))
