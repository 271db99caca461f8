"""Retention: ``gateway db prune --older-than 30d``.

The CLI calls ``asyncio.run(prune(url, parse_duration("30d")))`` and prints the count.
"""

from __future__ import annotations

import datetime as dt
import re

from capture.store import Store

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``, or combined (``1d12h``); ValueError if not."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty duration: give e.g. 30d, 12h, 90m")
    position = 0
    seconds = 0.0
    for match in _DURATION.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"not a duration: {text!r} (give e.g. 30d, 12h, 90m, 45s, 2w)")
    if seconds <= 0:
        raise ValueError(f"the duration must be positive: {text!r}")
    return dt.timedelta(seconds=seconds)


async def prune(url: str, older_than: dt.timedelta) -> int:
    """Delete the calls (and their feedback) older than ``older_than``; how many calls."""
    store = await Store.connect(url)
    try:
        return await store.prune(older_than)
    finally:
        await store.close()
