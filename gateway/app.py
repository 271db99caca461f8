"""The composition root: ``create_app(settings)`` builds the ASGI application.

/v1/* goes to the hot-path proxy (plain ASGI); everything else (and /v1/feedback) to the FastAPI
app: health, metrics, feedback, admin. The app owns the lifespan: provider clients and the
capture writer are opened at startup inside the event loop; at shutdown the shadows finish and
the capture queue is drained before the process exits. Nothing is built at import time.
Under uvicorn (``create_app_from_environment``) it also hooks SIGTERM: not ready at once, and
streams still open at the shutdown deadline end with an error event (gateway/draining.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import mark_process_dead
from starlette.exceptions import HTTPException

from capture.errortext import describe_error
from capture.lease import DatabaseLease, Lease
from capture.pricing import PriceTable
from capture.rollouts import RolloutTable
from capture.store import Store
from gateway.cache import RedisCache
from gateway.capturing import AnyWriter, open_capture
from gateway.dashboard.rollup import fold_pending
from gateway.draining import DRAIN, SHUTTING_DOWN
from gateway.errors import Unavailable
from gateway.internal import InternalClient
from gateway.keys import KeyStore, VirtualKeys
from gateway.limits import Limiter, LocalLimiter
from gateway.looplag import start_from_environment as start_looplag
from gateway.metrics import Metrics
from gateway.probes import PATHS as PROBES
from gateway.probes import serve as serve_probe
from gateway.proxy import Proxy
from gateway.recording import Recorder
from gateway.redislease import RedisLease
from gateway.redislimits import RedisLimiter
from gateway.relay import Call, send_error
from gateway.resp import PipelinedRedis
from gateway.rollout_actions import GatewayActions
from gateway.rollouts import RolloutService
from gateway.runtime import RuntimeManager, UpstreamFactory
from gateway.settings import RedisSettings, Settings, load_settings, with_upstream_override
from gateway.shadow import ShadowResult, ShadowRunner
from gateway.sync import RouteSync
from gateway.types import ASGIApp, Receive, Scope, Send
from router.breaker import BreakerState
from router.config import ProviderConfig
from router.upstream import Upstream

log = logging.getLogger("gateway")

CONFIG_ENV = "GATEWAY_CONFIG"
UPSTREAM_OVERRIDE_ENV = "GATEWAY_UPSTREAM_OVERRIDE"
SHADOW_GRACE_SECONDS = 10.0
CAPTURE_DRAIN_SECONDS = 20.0
GC_THRESHOLDS = (5000, 20, 10)
"""The collector's thresholds once serving (CPython's are 700, 10, 10). A call's objects die
within a few thousand allocations; at 700 the youngest generation was collected while many
calls' objects were alive, which promoted them: at c=50 everything on, 10-13 second-generation
collections over 1 ms and a full one of 7-8 ms per 3,000 calls, and ~140 young ones. At 5,000:
3 young collections (1-3 ms) and none older in the same window (bench tail, --quick)."""
_BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class GatewayApp:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        upstream_factory: UpstreamFactory | None = None,
        upstream_override: str | None = None,
        handle_signals: bool = False,
    ) -> None:
        self.config_path = config_path
        self.handle_signals = handle_signals
        self.upstream_override = upstream_override
        self.manager = RuntimeManager(settings, upstream_factory)
        self.metrics = Metrics()
        self._prices = settings.capture.prices
        self.recorder = Recorder(self.metrics, PriceTable(self._prices))
        self.shadows = ShadowRunner()
        self.shadows.report = self._shadow_done
        self.shadows.on_skip = self._shadow_skipped
        self.limiter: Limiter = LocalLimiter()
        self.recorder.limiter = self.limiter
        self.proxy = Proxy(self.manager, self.shadows, self.recorder, self.limiter)
        self._redis: Any = None
        self._lean: PipelinedRedis | None = None
        """The lean connection to Redis (gateway.resp), shared; closed with the limiter."""
        self.store: Store | None = None
        self.keys: VirtualKeys | None = None
        self.sync: RouteSync | None = None
        self.writer: AnyWriter | None = None
        self.rollouts: RolloutService | None = None
        self.internal: InternalClient | None = None
        self.ready = False
        self._sync_task: asyncio.Task[None] | None = None
        self._reported = {"written": 0, "dropped": 0, "retried": 0, "failed": 0}
        self._api: ASGIApp | None = None
        self._api_build: asyncio.Future[ASGIApp] | None = None

    def load(self, path: Path) -> Settings:
        """Read the config file as at startup (with the simulator override, if any)."""
        settings = load_settings(path)
        if self.upstream_override:
            settings = with_upstream_override(settings, self.upstream_override)
        return settings

    def reload(self) -> None:
        """Re-read the config file (asked by another replica); ConfigError if it is bad."""
        if self.config_path is not None:
            self.manager.replace(self.load(self.config_path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith("/v1/") and scope["path"] != "/v1/feedback":
            if DRAIN.installed:
                await self._proxy_until_deadline(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http" and scope["path"] in PROBES and scope["method"] == "GET":
            await serve_probe(self, scope, send)
        elif kind == "http":
            timeout_s = self.manager.settings.server.body_read_timeout_s
            api = self._api or await self.api()
            await api(scope, self.proxy.bodies.guard(receive, timeout_s, _slow_body), send)
        else:
            await (self._api or await self.api())(scope, receive, send)

    def build_api(self) -> ASGIApp:
        """The FastAPI app: feedback, admin, dashboard (and probes by other methods)."""
        # Here, not at the top: FastAPI and its OpenAPI models (~0.3 s, ~11 MiB) for a
        # gateway that is asked for one of these, not at every start.
        from gateway.admin import build_admin
        from gateway.api import build_api
        from gateway.dashboard import build_dashboard

        return build_api(
            self,
            build_admin(
                self.manager,
                lambda: self.config_path,
                self.load,
                lambda: self.keys,
                lambda: self.sync,
                lambda: self.rollouts,
            ),
            build_dashboard(self),
        )

    async def api(self) -> ASGIApp:
        """The FastAPI app, built on first use in a thread (calls keep being served meanwhile);
        requests that come during the build wait for the same one."""
        if self._api is None:
            if self._api_build is None:
                self._api_build = asyncio.ensure_future(asyncio.to_thread(self.build_api))
            build = self._api_build
            try:
                self._api = await asyncio.shield(build)
            except asyncio.CancelledError:
                raise
            except BaseException:
                if self._api_build is build:  # the next request tries again
                    self._api_build = None
                raise
        return self._api

    async def _proxy_until_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The proxy, with the shutdown deadline's answer for a call not answered by then: a
        503 in OpenAI's shape instead of uvicorn's plain-text 500 a few seconds later."""
        task = asyncio.current_task()
        try:
            await self.proxy(scope, receive, send)
        except asyncio.CancelledError:
            call = DRAIN.ended_call(task)
            if not isinstance(call, Call):
                raise
            log.warning("call %s answered 503: the gateway is shutting down", call.request_id)
            error = Unavailable(
                "The gateway is shutting down and could not answer in time; send the request"
                " again.",
                code=SHUTTING_DOWN,
            )
            await send_error(send, error, call)
        finally:
            DRAIN.call_closed(task)

    async def startup(self) -> None:
        # The benchmark's loop-lag sampler, only when GATEWAY_LOOPLAG is set; first, so that
        # with GATEWAY_LOOPLAG_STEPS the tasks made below have their steps timed too.
        start_looplag()
        settings = self.manager.settings
        if settings.redis is not None:
            self._redis = connect_redis(settings.redis)
            # The one lean connection for what calls wait on (admits, cache lookups), and the
            # autopilot's lease; closed with the limiter.
            connection = self._lean = PipelinedRedis.like(self._redis)
            errors = self.metrics.limiter_errors
            self.limiter = RedisLimiter(
                self._redis,
                prefix=settings.redis.prefix,
                fail_open=settings.redis.on_failure == "open",
                credits=settings.redis.credits,
                connection=connection,
                on_error=lambda outcome: errors.labels("redis", outcome).inc(),
            )
            self.recorder.limiter = self.proxy.limiter = self.limiter
            self.proxy.cache = RedisCache(
                self._redis, prefix=settings.redis.prefix, connection=connection
            )
        if settings.capture.enabled:
            self.store, self.writer = await open_capture(
                settings.capture, str(self.config_path or "FILE")
            )
            self.recorder.writer = self.writer
            channel = f"{settings.redis.prefix}:keys" if settings.redis else "gateway:keys"
            self.keys = VirtualKeys(KeyStore(self.store.engine), self._redis, channel)
            await self.keys.start()
            keys = self.keys
            self.manager.extra_keys = lambda: keys.by_digest
        self.manager.start()
        self.manager.on_replace.append(self._prices_changed)
        if self._redis is not None and settings.redis is not None:
            self.sync = RouteSync(self._redis, settings.redis.prefix, self.manager, self.reload)
            await self.sync.start()
        if self.store is not None and settings.autopilot.enabled:
            self.rollouts = self._rollout_service(settings)
            self.rollouts.start()
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_metrics())
        # Everything made so far (imported modules, the app, the clients) lives as long as the
        # process: out of the collector's sight, a full collection scans only what calls make.
        # Without this a full collection took ~50 ms under load: the p99 of every call near it.
        # No collection first: it found ~10 unreachable objects here (frozen, they stay) for
        # 40-70 ms of every start, everything on.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.ready = True
        if self.handle_signals:
            server = settings.server
            DRAIN.install(server.shutdown_delay_s, server.shutdown_timeout_s, self._draining)

    def _prices_changed(self, settings: Settings) -> None:
        """A reload that changes ``capture.prices`` (``gateway register --price`` writes one)
        prices the next calls with it, and the rollouts' savings too."""
        prices = settings.capture.prices
        if prices == self._prices:
            return
        self._prices = prices
        table = PriceTable(prices)
        self.recorder.prices = table
        if self.writer is not None:
            self.writer.set_prices(prices)
        if self.rollouts is not None:
            self.rollouts.prices = table

    def _rollout_service(self, settings: Settings) -> RolloutService:
        """The autopilot on this replica: the lease in Redis when there is one, else in the
        capture database; judges through the gateway's own routes, in-process."""
        assert self.store is not None
        autopilot = settings.autopilot
        engine = self.store.engine
        lease: Lease = (
            RedisLease(self._redis, settings.redis.prefix, connection=self._lean)
            if self._redis is not None and settings.redis is not None
            else DatabaseLease(engine)
        )
        judge = None
        if autopilot.judge_route is not None:
            # Here, not at the top: only a gateway whose autopilot judges needs the judge.
            from autopilot.judging import PairJudge

            self.internal = InternalClient(self, concurrency=autopilot.judge_concurrency)
            judge = PairJudge(
                engine,
                self.internal.chat,
                judge_route=autopilot.judge_route,
                rubric=autopilot.rubric,
                both_orders=autopilot.both_orders,
                sample=autopilot.judge_sample,
                concurrency=autopilot.judge_concurrency,
            )
        actions = GatewayActions(self.manager, lambda: self.sync)
        return RolloutService(
            self.manager,
            RolloutTable(engine),
            lease,
            actions,
            self.metrics,
            judge=judge,
            prices=PriceTable(settings.capture.prices),
            evidence_url=settings.capture.database_url,
        )

    def _draining(self) -> None:
        """SIGTERM (called from the signal handler): not ready from now on."""
        self.ready = False

    async def shutdown(self) -> None:
        """Stop answering as ready, let shadows finish, write what the capture queue holds."""
        self.ready = False
        if self.handle_signals:
            DRAIN.uninstall()
        if self.keys is not None:
            await self.keys.stop()
        if self.rollouts is not None:
            await self.rollouts.stop()
        if self.internal is not None:
            await self.internal.aclose()
        if self.sync is not None:
            await self.sync.stop()
        await self.shadows.drain(SHADOW_GRACE_SECONDS)
        if self.writer is not None:
            drained = await self.writer.drain(CAPTURE_DRAIN_SECONDS)
            if not drained:
                log.error("capture: some records could not be written before exit")
        if self.store is not None:
            await self.store.close()
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.manager.stop()
        await self.limiter.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self.metrics.multiprocess:
            # This worker's live gauges leave the merged view (its counters stay).
            mark_process_dead(os.getpid())

    def _shadow_done(self, result: ShadowResult) -> None:
        self.recorder.finish_shadow(result, result.record)

    def _shadow_skipped(self, result: ShadowResult) -> None:
        decision = result.decision
        self.metrics.shadow_calls.labels(decision.route, decision.variant, "skipped").inc()

    async def _sync_metrics(self) -> None:
        """Copy the capture writer's counters and the breakers' states into the metrics each
        second; each minute, fold the dashboard's pending rows into its hourly rollup."""
        ticks = 0
        while True:
            try:
                self.sync_metrics()
                ticks += 1
                if ticks % 60 == 0 and self.store is not None:
                    await fold_pending(self.store.engine)
            except Exception:
                log.exception("periodic metrics or rollup work failed")
            await asyncio.sleep(1.0)

    def sync_metrics(self) -> None:
        m = self.metrics
        writer = self.writer
        if writer is not None:
            stats = writer.stats()
            m.capture_queue_depth.set(stats["queue_depth"])
            m.capture_store_up.set(1 if stats.get("store_up", True) else 0)
            for outcome, last in self._reported.items():
                now = int(stats[outcome])
                if now > last:
                    m.capture_records.labels(outcome).inc(now - last)
                    self._reported[outcome] = now
        for (provider, model), state in self.manager.breakers.states().items():
            m.breaker_state.labels(provider, model).set(_BREAKER_VALUES[state])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("the gateway cannot start: %s", describe_error(exc))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def connect_redis(settings: RedisSettings) -> Any:
    """A Redis client that gives up fast: a dead Redis must not stall calls."""
    import redis.asyncio as aioredis

    timeout = settings.timeout_ms / 1000.0
    return aioredis.Redis.from_url(
        settings.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )


def create_app(settings: Settings, upstreams: Mapping[str, Upstream] | None = None) -> GatewayApp:
    """The gateway for ``settings``; ``upstreams`` replaces the provider clients (tests)."""
    factory: UpstreamFactory | None = None
    if upstreams is not None:
        given = dict(upstreams)

        def factory(name: str, config: ProviderConfig) -> Upstream:
            return given[name]

    return GatewayApp(settings, upstream_factory=factory)


def create_app_from_environment() -> GatewayApp:
    """Factory for uvicorn workers: the config path (and simulator override) come from env."""
    path = Path(os.environ[CONFIG_ENV])
    override = os.environ.get(UPSTREAM_OVERRIDE_ENV) or None
    settings = load_settings(path)
    if override:
        settings = with_upstream_override(settings, override)
    return GatewayApp(settings, config_path=path, upstream_override=override, handle_signals=True)


def _slow_body(message: str) -> Exception:
    """The FastAPI routes' RequestTimeout: FastAPI passes HTTPExceptions on, but turns any other
    error in reading a body into a 400."""
    return HTTPException(408, message)
