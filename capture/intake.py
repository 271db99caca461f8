"""What both capture writers do on the hot path besides queueing: decide whether to record a
call (``enabled`` and the ``sample`` rate), and count and log the records they drop.

``capture.writer.CaptureWriter`` (a task on the serving loop) and
``capture.writer_process.ProcessWriter`` (a process of its own) both build on ``Intake``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from capture.config import CaptureSettings

DROP_LOG_INTERVAL_S = 60.0
"""Dropped records are logged at most this often (with the count so far)."""


class Intake:
    def __init__(
        self,
        settings: CaptureSettings,
        clock: Callable[[], float],
        sample_random: Callable[[], float],
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._random = sample_random
        self._log = log
        self._capacity = settings.queue_size
        self._accepting = True
        self._last_drop_log: float | None = None
        self.dropped = 0
        """Records refused by ``submit`` (queue full or writer stopped)."""
        self.sampled_out = 0
        """Calls ``should_capture`` said not to record."""

    def should_capture(self) -> bool:
        """Whether to record this call (``enabled`` and the ``sample`` rate); decide before
        building the record so a sampled-out call costs nothing more."""
        settings = self.settings
        if not settings.enabled:
            return False
        if settings.sample >= 1.0 or self._random() < settings.sample:
            return True
        self.sampled_out += 1
        return False

    def _drop(self, why: str | None = None) -> None:
        self.dropped += 1
        now = self._clock()
        if self._last_drop_log is None or now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            reason = why or (
                "the writer has stopped" if not self._accepting else "the queue is full"
            )
            self._log.warning(
                "capture record dropped: %s (%d dropped so far, queue_size %d)",
                reason,
                self.dropped,
                self._capacity,
            )
