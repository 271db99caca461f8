"""Shadow calls: a copy of a live call sent to another variant in the background.

The client never waits for a shadow and never sees its outcome; a failing or slow shadow costs
it nothing. At most ``limit`` shadows run at once: beyond that a copy is skipped and counted,
so a slow shadow variant cannot pile up memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from router.errors import UpstreamError
from router.table import Decision
from router.upstream import Upstream

log = logging.getLogger("gateway.shadow")


@dataclass(slots=True)
class ShadowResult:
    """A shadow call's outcome, for whatever records calls."""

    shadow_of: str
    decision: Decision
    path: str
    """The upstream's path, relative to its base URL (``/chat/completions``, ``/messages``)."""
    endpoint: str
    requested_model: str
    request_body: bytes
    """What is sent to the shadow variant (its model, the usage option)."""
    client_body: bytes
    """The client's request as it came, which the capture stores."""
    started_at: float
    stream: bool
    record: bool
    user: str | None = None
    tags: str | None = None
    marks: dict[str, str] | None = None
    """Tags the gateway adds to the copy's record (a counterfactual's ``gateway.*`` marks)."""
    redact: tuple[str, ...] | None = None
    query: str = ""
    dialect: str = "openai"
    """The client's dialect (the capture stores the client's request)."""
    upstream_api: str = "openai"
    status: int | None = None
    error: str | None = None
    body: bytes | None = None
    chunks: list[bytes] = field(default_factory=list)
    ttft_ms: float | None = None
    total_ms: float = 0.0


ShadowReporter = Callable[[ShadowResult], None]
"""Told of every finished shadow call (metrics, and the capture when ``record``)."""


class ShadowRunner:
    def __init__(self, limit: int = 256, report: ShadowReporter | None = None) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self.report = report
        self.on_skip: ShadowReporter | None = None
        self.launched = 0
        self.skipped = 0
        self.failed = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def launch(self, upstream: Upstream, headers: dict[str, str], result: ShadowResult) -> None:
        if len(self._tasks) >= self._limit:
            self.skipped += 1
            if self.on_skip is not None:
                self.on_skip(result)
            return
        self.launched += 1
        task = asyncio.get_running_loop().create_task(self._run(upstream, headers, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, upstream: Upstream, headers: dict[str, str], result: ShadowResult) -> None:
        started = time.perf_counter()
        try:
            response = await upstream.send(
                "POST",
                result.path,
                result.query,
                headers,
                result.request_body,
                result.decision.timeout,
            )
            result.status = response.status
            if result.stream and response.status == 200:
                async for chunk in response.iter_chunks():
                    if result.ttft_ms is None:
                        result.ttft_ms = (time.perf_counter() - started) * 1000.0
                    result.chunks.append(chunk)
            else:
                result.body = await response.read()
        except UpstreamError as exc:
            result.error = exc.detail
        except Exception as exc:  # a shadow must never take anything else down
            log.exception("shadow call for %s failed", result.shadow_of)
            result.error = f"{type(exc).__name__}: {exc}"
        result.total_ms = (time.perf_counter() - started) * 1000.0
        if result.error is not None or (result.status or 0) >= 400:
            self.failed += 1
        if self.report is not None:
            try:
                self.report(result)
            except Exception:
                log.exception("reporting shadow call for %s failed", result.shadow_of)

    async def drain(self, grace_seconds: float) -> None:
        """Wait for the running shadows up to ``grace_seconds``, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
