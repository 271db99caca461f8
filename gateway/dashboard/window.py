"""The time window a dashboard view covers, and the width of its chart buckets.

A preset (``15m``, ``1h``, ``24h``, ``7d``) ends now; a custom window gives ``start`` and ``end``
(ISO 8601; a time without a zone is UTC). Buckets are the smallest of ``BUCKET_STEPS_S`` that
keeps a chart at or under ``MAX_BUCKETS`` points: 15 min -> 10 s, 1 h -> 30 s, 24 h -> 10 min,
7 d -> 1 h. Buckets are aligned on the epoch, so the same call lands in the same bucket in every
view and on every replica.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

PRESETS: dict[str, dt.timedelta] = {
    "15m": dt.timedelta(minutes=15),
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}
DEFAULT_PRESET = "1h"
BUCKET_STEPS_S = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600)
MAX_BUCKETS = 180
LONGEST = dt.timedelta(days=366)


class WindowError(ValueError):
    """A window that cannot be used; the message says why (shown to the user as a 400)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: dt.datetime
    """Inclusive, timezone-aware UTC."""
    end: dt.datetime
    """Exclusive, timezone-aware UTC."""
    label: str
    """The preset's name, or ``custom``."""

    @property
    def bucket_s(self) -> int:
        span = (self.end - self.start).total_seconds()
        for step in BUCKET_STEPS_S:
            if span / step <= MAX_BUCKETS:
                return step
        return BUCKET_STEPS_S[-1]

    def bucket_starts(self) -> list[int]:
        """Epoch seconds of every bucket the window touches, oldest first."""
        step = self.bucket_s
        first = int(self.start.timestamp()) // step
        last = (int(self.end.timestamp()) - 1) // step
        return [b * step for b in range(first, max(first, last) + 1)]

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "bucket_s": self.bucket_s,
        }


def _parse_time(value: str, name: str) -> dt.datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(f"`{name}` is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def parse_window(
    preset: str | None,
    start: str | None = None,
    end: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> Window:
    """The window for the query parameters ``window``, ``start`` and ``end``."""
    now = now or dt.datetime.now(dt.UTC)
    if start is not None or end is not None or preset == "custom":
        if start is None:
            raise WindowError("A custom window needs `start` (and optionally `end`).")
        begin = _parse_time(start, "start")
        finish = _parse_time(end, "end") if end else now
        if finish <= begin:
            raise WindowError("`end` must be after `start`.")
        if finish - begin > LONGEST:
            raise WindowError("A window may span at most 366 days.")
        return Window(begin, finish, "custom")
    name = preset or DEFAULT_PRESET
    span = PRESETS.get(name)
    if span is None:
        choices = ", ".join([*PRESETS, "custom"])
        raise WindowError(f"Unknown window {name!r}; use one of: {choices}.")
    return Window(now - span, now, name)
