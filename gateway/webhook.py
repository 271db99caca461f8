"""Rollout decisions POSTed to ``autopilot.webhook_url``, in the background.

A bounded queue and one sender: each decision is posted as JSON with a 5 s timeout; a failure
or a full queue is counted (``gateway_rollout_webhook_posts_total{outcome}``) and logged, never
raised and never waited on by the controller's loop. The URL is never logged: it may hold a
token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from capture.errortext import describe_error
from gateway.metrics import Metrics

log = logging.getLogger("gateway.rollouts")

WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_QUEUE = 1000


class Webhook:
    def __init__(self, url: str, metrics: Metrics) -> None:
        self.url = url
        self._metrics = metrics
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(WEBHOOK_QUEUE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._send_all())

    def post(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self._metrics.rollout_webhook.labels("dropped").inc()
            log.warning("rollout webhook: queue full, a decision was not posted")

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _send_all(self) -> None:
        # Here, not at the top: the gateway imports this module at start, and only a gateway
        # with a webhook URL needs httpx (~40 ms of imports).
        import httpx

        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as client:
            while True:
                payload = await self._queue.get()
                try:
                    response = await client.post(self.url, json=payload)
                    response.raise_for_status()
                    self._metrics.rollout_webhook.labels("ok").inc()
                except Exception as exc:
                    self._metrics.rollout_webhook.labels("failed").inc()
                    log.warning("rollout webhook: a decision was not posted: %s", _why(exc))
                finally:
                    self._queue.task_done()


def _why(exc: Exception) -> str:
    import httpx  # imported already: _send_all is the only caller

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__ if isinstance(exc, httpx.HTTPError) else describe_error(exc)
