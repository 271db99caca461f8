"""The rollout service: the autopilot's controller run by the gateway, off the hot path.

Started in the app's lifespan when the capture database is configured, on every replica. Every
``autopilot.interval_s`` it takes or renews the lease (Redis's when Redis is configured, else
the database's) and, on the holder only:

- starts each route's configured rollout (``routes.R.rollout``) that the store does not hold yet
  (once: a finished rollout is never restarted from the configuration);
- when it has just taken the lease (or after a restart), re-applies every rollout's current
  shares, pins, shadow and counterfactual copies from the saved state, so routing follows the
  state even on a replica that reads its file's weights (no Redis);
- looks at every rollout (``autopilot.runner.Controller.look``): the evidence since the saved
  cursor (``autopilot.evidence.EvidenceReader``), an abort asked on any replica
  (``rollouts.abort``), the candidate's breaker; the decisions are applied through the gateway's
  `RoutingActions` and shared (``flush``);
- reports each decision: logged at INFO, counted in /metrics, posted to the webhook.
A second task judges the pending pairs of every live rollout (``autopilot.judging.PairJudge``,
bounded per look), on the holder only. Nothing here runs on a call's path.

The admin API and the CLI start, describe and abort rollouts through `RolloutService`; any
replica may, since they only write the store (an abort is acted on by the holder's next look).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from autopilot.controller import (
    DEFAULT_SLICE,
    PROMOTED,
    RUNNING,
    SLICE_PINNED,
    Actions,
    DecisionRecord,
    Evidence,
    Rollout,
    RolloutConfig,
)
from autopilot.evidence import EvidenceReader
from autopilot.ledger import MONEY_FIELDS, ledger, project
from autopilot.runner import FINISHED, Controller, Gather
from capture.engine import create_engine
from capture.errortext import describe_error
from capture.lease import Lease
from capture.ledger import UsageSums, usage_sums
from capture.pricing import Price, PriceTable
from capture.rollouts import RolloutTable
from capture.schema import NAME_LENGTH
from gateway.metrics import Metrics
from gateway.offloop import LoopThread
from gateway.rolloutplan import rollout_config
from gateway.rolloutview import (
    at,
    brief,
    decision_view,
    readable_state,
    training_cost,
)
from gateway.runtime import RuntimeManager
from gateway.settings import AutopilotSettings
from gateway.webhook import Webhook
from router.breaker import BreakerState
from router.config import RouteRollout

log = logging.getLogger("gateway.rollouts")

DECISIONS_SHOWN = 50
SAVINGS_FIELDS = ("student_calls", "unpriced_calls", *MONEY_FIELDS)
PROJECTION_WINDOW_S = 86400.0
"""The traffic a projection is made from: the last day's."""
SUM_FIELDS = (
    "calls",
    "unpriced",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "cost_usd",
)
LIVE = (RUNNING, PROMOTED)
"""Rollouts still looked at (a promoted one stays watched); FINISHED ones are left alone."""


class RoutingActions(Actions, Protocol):
    """The gateway's side of the controller's actions (``gateway.rollout_actions``)."""

    def set_counterfactual(self, route: str, of: str, variant: str, sample: float) -> None:
        """Copy ``sample`` of the calls ``of`` answers to ``variant`` (0 removes it)."""

    async def flush(self) -> None:
        """Make the changes so far take effect here and on every replica."""


class Judge(Protocol):
    async def judge_pending(
        self, config: RolloutConfig, since: dt.datetime, limit: int = 200
    ) -> int: ...


class RolloutError(Exception):
    """A request the service cannot do; ``status`` and ``code`` for the admin API."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def holder_name() -> str:
    """This process's name for the lease: host, pid and a random part (restarts differ)."""
    name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return name[-NAME_LENGTH:]


class RolloutService:
    def __init__(
        self,
        manager: RuntimeManager,
        table: RolloutTable,
        lease: Lease,
        actions: RoutingActions,
        metrics: Metrics,
        *,
        judge: Judge | None = None,
        prices: PriceTable | None = None,
        evidence_url: str | None = None,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manager = manager
        self.table = table
        self.actions = actions
        self.metrics = metrics
        self.judge = judge
        self.prices = prices
        self.clock = clock
        self._evidence_url = evidence_url
        self._reader_thread = LoopThread("rollout-evidence") if evidence_url else None
        self._reader_engine: AsyncEngine | None = None
        settings = self.settings
        self.controller = Controller(table, lease, holder or holder_name(), settings.lease_ttl_s)
        self.webhook = Webhook(settings.webhook_url, metrics) if settings.webhook_url else None
        self._counterfactual: dict[str, tuple[str, str, float] | None] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def settings(self) -> AutopilotSettings:
        return self.manager.settings.autopilot

    @property
    def holder(self) -> str:
        return self.controller.holder

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.webhook is not None:
            self.webhook.start()
        self._tasks = [loop.create_task(self._looking())]
        if self.judge is not None:
            self._tasks.append(loop.create_task(self._judging()))

    async def stop(self) -> None:
        """Stop looking and judging, and hand the lease over at once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            await self.controller.stop(self.clock())
        except Exception as exc:
            log.warning("the autopilot's lease was not released: %s", describe_error(exc))
        if self.webhook is not None:
            await self.webhook.stop()
        if self._reader_thread is not None:
            await self._reader_thread.close(self._close_reader)

    async def _looking(self) -> None:
        while True:
            began = time.perf_counter()
            try:
                await self.tick()
                if self.controller.holding:
                    self.metrics.rollout_look.observe(time.perf_counter() - began)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("the rollout controller's look failed: %s", describe_error(exc))
                log.debug("the look's failure", exc_info=True)
            await asyncio.sleep(self.settings.interval_s)

    async def _judging(self) -> None:
        assert self.judge is not None
        while True:
            await asyncio.sleep(self.settings.interval_s)
            if not self.controller.holding:
                continue
            for route, rollout in list(self.controller.seen.items()):
                if rollout.status not in LIVE:
                    continue
                try:
                    await self.judge.judge_pending(
                        rollout.config, at(rollout.started), self.settings.judge_batch
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("judging the pairs of %s failed: %s", route, describe_error(exc))

    # --- one look at every rollout ------------------------------------------------------------

    async def tick(self) -> list[DecisionRecord]:
        """One look at every rollout, on the lease's holder; the decisions made."""
        now = self.clock()
        was_holding = self.controller.holding
        if not await self.controller.acquire(now):
            if was_holding:
                log.info("autopilot: %s no longer holds the lease", self.holder)
            return []
        states = await self.table.load_all()
        await self._start_configured(states, now)
        if not was_holding:
            log.info("autopilot: %s holds the lease; re-applying the saved rollouts", self.holder)
            self._counterfactual.clear()
            for route, state in states.items():
                if route not in self.manager.settings.routes:
                    continue
                try:
                    self._reapply(Rollout.from_state(state))
                except Exception as exc:
                    why = describe_error(exc)
                    log.error("re-applying the rollout of %s failed: %s", route, why)
        decided: list[DecisionRecord] = []
        for route, state in states.items():
            if state.get("status") in FINISHED and route in self.controller.seen:
                continue  # nothing more to decide or apply
            if route not in self.manager.settings.routes:
                continue  # the route left the configuration: nothing to route
            try:
                records = await self._look(route, state, now)
            except Exception as exc:  # one route's trouble leaves the others' looks alone
                log.error("the look at the rollout of %s failed: %s", route, describe_error(exc))
                continue
            if records is None:
                break  # the lease was lost meanwhile
            decided += records
        await self.actions.flush()
        return decided

    async def _look(
        self, route: str, state: Mapping[str, Any], now: float
    ) -> list[DecisionRecord] | None:
        asked: list[str] = []
        gather = self._gatherer(route, float(state["started"]), now, asked)
        records = await self.controller.look(route, now, gather, self.actions)
        if records is None:
            return None
        if asked:
            await self.table.clear_abort(route, asked[0])
        for record in records:
            self._report(record)
        rollout = self.controller.seen.get(route)
        if rollout is not None:
            self._counterfactuals(rollout)
            self._gauges(rollout)
        return records

    def _gatherer(self, route: str, started: float, now: float, asked: list[str]) -> Gather:
        async def gather(config: RolloutConfig, cursor: Any) -> tuple[Evidence, Any]:
            evidence, after = await self._read(config, started, cursor, now)
            abort = await self.table.pending_abort(route)
            if abort is not None:
                asked.append(abort)
            for s in evidence.slices:
                for verdict, n in (("win", s.wins), ("tie", s.ties), ("loss", s.losses)):
                    if n:
                        self.metrics.judge_verdicts.labels(route, verdict).inc(n)
            breaker = self._breaker_open(route, config.candidate)
            return Evidence(evidence.slices, abort=abort, breaker_open=breaker), after

        return gather

    async def _read(
        self, config: RolloutConfig, started: float, cursor: Any, now: float
    ) -> tuple[Evidence, Any]:
        """The evidence since ``cursor``: on the reader's own thread and engine when the
        service has them (``evidence_url``), so its CPU never holds the calls' event loop."""
        lag = self.settings.evidence_lag_s
        if self._reader_thread is None:
            reader = EvidenceReader(self.table.engine, config, lag_s=lag, started=at(started))
            return await reader.read(cursor, at(now))

        async def read() -> tuple[Evidence, Any]:
            if self._reader_engine is None:
                assert self._evidence_url is not None
                self._reader_engine = create_engine(self._evidence_url)
            reader = EvidenceReader(self._reader_engine, config, lag_s=lag, started=at(started))
            return await reader.read(cursor, at(now))

        return await self._reader_thread.run(read())

    async def _close_reader(self) -> None:
        if self._reader_engine is not None:
            await self._reader_engine.dispose()
            self._reader_engine = None

    def _breaker_open(self, route: str, candidate: str) -> bool:
        config = self.manager.settings.routes.get(route)
        variant = config.variants.get(candidate) if config is not None else None
        if variant is None:
            return False
        state = self.manager.breakers.states().get((variant.provider, variant.model))
        return state == BreakerState.OPEN

    async def _start_configured(self, states: dict[str, dict[str, Any]], now: float) -> None:
        for route, config in self.manager.settings.routes.items():
            if config.rollout is None or route in states:
                continue
            try:
                rollout = await self._begin(route, config.rollout, now)
            except RolloutError as exc:
                log.error("the configured rollout of %s cannot start: %s", route, exc.message)
                continue
            log.info(
                "rollout of %s started from the configuration: %s -> %s",
                route,
                rollout.config.incumbent,
                rollout.config.candidate,
            )
            states[route] = rollout.state()

    async def _begin(self, route: str, plan: RouteRollout, now: float) -> Rollout:
        config = self.manager.settings.routes.get(route)
        if config is None:
            raise RolloutError(404, f"No route named `{route}`.", "route_not_found")
        try:
            rollout_cfg = rollout_config(route, config, plan)
        except ValueError as exc:
            raise RolloutError(400, f"Invalid rollout: {exc}.", "invalid_rollout") from None
        rollout = await self.controller.start(rollout_cfg, now)
        await self.table.clear_abort(route)
        if self.judge is None:
            log.warning(
                "rollout of %s: autopilot.judge_route is not set, so no pair is judged and the "
                "quality gate cannot pass; the candidate will not advance",
                route,
            )
        return rollout

    # --- applying the saved state ------------------------------------------------------------

    def _reapply(self, rollout: Rollout) -> None:
        """Every slice's current share or pin, the shadow and the counterfactual, as saved."""
        c = rollout.config
        a = self.actions
        if rollout.begun and c.slice_keys:
            a.set_weights(c.route, {c.incumbent: 1.0, c.candidate: 0.0}, None)
        for s in rollout.slices.values():
            default = s.name == DEFAULT_SLICE
            if s.status == SLICE_PINNED:
                if default:
                    a.set_weights(c.route, {c.incumbent: 1.0}, None)
                else:
                    a.pin_slice(c.route, s.tags, c.incumbent)
                continue
            share = rollout.share(s)
            weights = {c.incumbent: round(1.0 - share, 9), c.candidate: share}
            a.set_weights(c.route, weights, None if default else s.tags)
        if rollout.shadow_on or rollout.status in FINISHED:
            a.set_shadow_sample(c.route, c.candidate, c.shadow_sample if rollout.shadow_on else 0)
        self._counterfactuals(rollout)
        self._gauges(rollout)

    def _counterfactuals(self, rollout: Rollout) -> None:
        """Counterfactual copies while the rollout is live, none once it has finished."""
        c = rollout.config
        want = (
            (c.candidate, c.incumbent, self.settings.counterfactual_sample)
            if rollout.status in LIVE
            else None
        )
        if c.route in self._counterfactual and self._counterfactual[c.route] == want:
            return
        if want is not None:
            self.actions.set_counterfactual(c.route, *want)
        else:
            self.actions.set_counterfactual(c.route, c.candidate, c.incumbent, 0.0)
        self._counterfactual[c.route] = want

    def _gauges(self, rollout: Rollout) -> None:
        for s in rollout.slices.values():
            self.metrics.rollout_share.labels(rollout.config.route, s.name).set(rollout.share(s))

    def _report(self, record: DecisionRecord) -> None:
        log.info(
            "rollout %s slice %s: %s (stage %d -> %d, share %.3g): %s",
            record.route,
            record.slice,
            record.action,
            record.from_stage,
            record.to_stage,
            record.share,
            record.reason,
        )
        self.metrics.rollout_decisions.labels(record.route, record.slice, record.action).inc()
        if self.webhook is not None:
            self.webhook.post({"event": "rollout_decision", **record.as_dict()})

    # --- what the admin API asks -------------------------------------------------------------

    async def begin(self, route: str, plan: RouteRollout) -> dict[str, Any]:
        """Start a rollout (409 while one is running); its description."""
        state = await self.table.load(route)
        if state is not None and state.get("status") == RUNNING:
            raise RolloutError(
                409,
                f"Route `{route}` already has a running rollout; abort it first.",
                "rollout_running",
            )
        rollout = await self._begin(route, plan, self.clock())
        log.info(
            "rollout of %s started through the admin API: %s -> %s",
            route,
            rollout.config.incumbent,
            rollout.config.candidate,
        )
        return await self.describe(route)

    async def abort(self, route: str, reason: str) -> dict[str, Any]:
        """Ask for the rollout to be aborted, running or promoted (the holder acts at its
        next look: every slice back on the incumbent)."""
        if not await self.table.request_abort(route, reason):
            state = await self.table.load(route)
            if state is None:
                raise RolloutError(404, f"Route `{route}` has no rollout.", "rollout_not_found")
            raise RolloutError(
                409,
                f"The rollout of `{route}` has finished (it is {state.get('status')}).",
                "rollout_not_running",
            )
        log.info("rollout of %s: abort asked (%s)", route, reason)
        return await self.describe(route)

    async def describe(self, route: str) -> dict[str, Any]:
        """The rollout's summary, each slice's gates as they stand, the last decisions."""
        state = await self.table.load(route)
        if state is None:
            raise RolloutError(404, f"Route `{route}` has no rollout.", "rollout_not_found")
        out = readable_state(route, state, self.clock())
        if "unreadable" in out:
            return out
        out["abort_requested"] = await self.table.pending_abort(route)
        decisions = await self.table.decisions(route, limit=DECISIONS_SHOWN)
        out["decisions"] = [decision_view(d) for d in decisions]
        out["holder"] = await self.controller.lease.holder()
        out["savings"] = await self._savings(state)
        out["projection"] = await self._projection(state)
        return out

    async def _savings(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Since the rollout started: what the candidate's live calls cost, what the
        incumbent's price makes of the same tokens, net of judge, counterfactual and shadow
        calls (the savings ledger's figures; one query). None when the incumbent's price is
        unknown."""
        config = RolloutConfig.from_dict(state["config"])
        price = self._incumbent_price(config)
        if price is None:
            return None
        since = at(float(state["started"]))
        sums = await usage_sums(self.table.engine, {config.route: [config.candidate]}, since)
        lines = ledger(sums, {config.route: price})
        out: dict[str, Any] = {"since": since.isoformat()}
        for name in SAVINGS_FIELDS:
            out[name] = sum(getattr(line, name) for line in lines)
        training = await training_cost(self.table.engine, config.route, config.candidate)
        out["training_cost_usd"] = training
        out["net_after_training_usd"] = (
            out["net_savings_usd"] - training if training is not None else None
        )
        return out

    def _incumbent_price(self, config: RolloutConfig) -> Price | None:
        route = self.manager.settings.routes.get(config.route)
        incumbent = route.variants.get(config.incumbent) if route is not None else None
        if self.prices is None or incumbent is None:
            return None
        return self.prices.price(incumbent.model)

    async def _projection(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the rollout's target share would save per day: the candidate's priced shadow
        copies of the last day against the incumbent's price for the same tokens, times the
        route's live calls of the last day (`autopilot.ledger.project`). None when the
        incumbent's price is unknown; savings None when nothing priced was shadowed yet."""
        config = RolloutConfig.from_dict(state["config"])
        price = self._incumbent_price(config)
        if price is None:
            return None
        since = at(self.clock() - PROJECTION_WINDOW_S)
        both = [config.incumbent, config.candidate]
        live = await usage_sums(self.table.engine, {config.route: both}, since)
        copies = await usage_sums(self.table.engine, {config.route: [config.candidate]}, since)
        calls = sum(s.calls for s in live if s.kind == "student")
        shadow = [s for s in copies if s.kind == "shadow"]
        merged = (
            UsageSums(
                config.route,
                since.strftime("%Y-%m-%d"),
                "shadow",
                *(sum(getattr(s, f) for s in shadow) for f in SUM_FIELDS),
            )
            if shadow
            else None
        )
        days = PROJECTION_WINDOW_S / 86400
        return project(config.route, merged, price, calls / days, config.target).as_dict()

    async def describe_all(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            brief(readable_state(route, state, now))
            for route, state in (await self.table.load_all()).items()
        ]
