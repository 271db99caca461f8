"""Retention: ``gateway db prune --older-than 30d``, ``capture.retention_days``, and the content
collector.

Two ways to retire old calls, on PostgreSQL both by dropping whole time partitions
(``capture.partitions``), never DELETE + VACUUM of the bulk:

- ``gateway db prune --older-than 30d`` is exact: every call older than the cutoff goes. The
  partitions that end before it are dropped; the older rows of the one partition that holds the
  cutoff (at most a day of calls with daily partitions) are DELETEd, and that partition is
  dropped whole by a later prune. ``prune(url, older_than)`` returns the count.
- ``capture.retention_days: N`` (the writer's background maintenance, ``Maintenance``) drops only
  whole partitions that ended more than N days ago: no DELETE at all, so a call is kept N days
  and at most one partition's span more (a day, with daily partitions).

SQLite has no partitions: both DELETE (``capture.partitions`` over days).

The content collector (``collect_content``). A part in ``content`` carries ``last_seen``, the
latest UTC day a writer stored a call referring to it: the writer (``Store.insert_calls``)
writes each part with the day it writes it and, for a part it stored before, refreshes the day
at most once a day (``ON CONFLICT ... DO UPDATE SET last_seen`` where older). A call is stored no
earlier than the day it was made, so every part a kept call refers to has ``last_seen`` on or
after the oldest kept call's day; the collector deletes the parts seen before that day (and
before yesterday, so that a batch still being written across midnight keeps its parts). It
runs after every prune and every maintenance round, one DELETE over ``ix_content_last_seen``.
A writer that believes a part was written today never writes it again today, which holds
because the collector never deletes a part seen yesterday or today.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.errortext import describe_error
from capture.partitions import (
    BeforeDrop,
    Partition,
    PruneResult,
    Unit,
    adopt_default_rows,
    drop_partitions_before,
    ensure_partitions,
)
from capture.schema import calls, content
from capture.store import Store

log = logging.getLogger("capture.retention")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAINTENANCE_LOCK = 0x6761_7465_7761_7A
"""PostgreSQL advisory lock held by the replica doing a maintenance round (the others skip it)."""


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


async def collect_content(engine: AsyncEngine, *, now: dt.datetime | None = None) -> int:
    """Delete the parts of ``content`` that no kept call can refer to (see the module's
    docstring); how many."""
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    async with engine.begin() as connection:
        oldest = await connection.scalar(select(func.min(calls.c.created_at)))
        threshold = today - dt.timedelta(days=1)
        if oldest is not None:
            threshold = min(threshold, oldest.astimezone(dt.UTC).date())
        result = await connection.execute(delete(content).where(content.c.last_seen < threshold))
    return int(result.rowcount)


@dataclass(frozen=True)
class Pruned:
    """What ``prune`` removed."""

    calls: int
    content: int
    partitions: tuple[Partition, ...]


async def prune_store(
    store: Store, older_than: dt.timedelta, *, unit: Unit = "day", now: dt.datetime | None = None
) -> Pruned:
    """Exact prune (``Store.prune``: whole partitions dropped, the boundary's older rows
    deleted), then the content collector."""
    moment = now or dt.datetime.now(dt.UTC)
    result = await store.prune_partitions(older_than, unit=unit, now=moment)
    collected = await collect_content(store.engine, now=moment)
    return Pruned(result.calls, collected, result.dropped)


async def prune_url(url: str, older_than: dt.timedelta, *, unit: Unit = "day") -> Pruned:
    """Delete the calls (and their feedback) older than ``older_than``, then the content no kept
    call refers to (``gateway db prune``)."""
    store = await Store.connect(url)
    try:
        return await prune_store(store, older_than, unit=unit)
    finally:
        await store.close()


async def prune(url: str, older_than: dt.timedelta, *, unit: Unit = "day") -> int:
    """``prune_url``; how many calls."""
    return (await prune_url(url, older_than, unit=unit)).calls


@dataclass(frozen=True)
class Round:
    """What one maintenance round did (``None`` fields: skipped, another replica had the lock)."""

    created: tuple[Partition, ...] = ()
    retention: PruneResult | None = None
    collected: int = 0
    skipped: bool = False


class Maintenance:
    """The capture database's background upkeep, every ``interval_s``: partitions created ahead
    (and rows of a DEFAULT partition given their own), partitions past ``retention_days``
    dropped (``before_drop`` called for each first, e.g. to archive it), unreferenced content
    collected. On PostgreSQL one replica at a time (an advisory lock; the others skip the round).
    Failures are logged and retried at the next round; the writer is never held up."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        unit: Unit = "day",
        retention_days: int | None = None,
        interval_s: float = 3600.0,
        before_drop: BeforeDrop | None = None,
    ) -> None:
        self.engine = engine
        self.unit: Unit = unit
        self.retention_days = retention_days
        self.interval_s = interval_s
        self.before_drop = before_drop
        self.rounds = 0
        self.failures = 0

    async def run_once(self, now: dt.datetime | None = None) -> Round:
        moment = now or dt.datetime.now(dt.UTC)
        async with self.engine.connect() as lock:
            if lock.dialect.name == "postgresql":
                got = await lock.scalar(text(f"SELECT pg_try_advisory_lock({MAINTENANCE_LOCK})"))
                await lock.commit()
                if not got:
                    return Round(skipped=True)
            try:
                created = await adopt_default_rows(self.engine, self.unit)
                created += await ensure_partitions(self.engine, self.unit, now=moment)
                retention = None
                if self.retention_days is not None:
                    cutoff = moment - dt.timedelta(days=self.retention_days)
                    retention = await drop_partitions_before(
                        self.engine, cutoff, self.before_drop, unit=self.unit
                    )
                collected = await collect_content(self.engine, now=moment)
            finally:
                if lock.dialect.name == "postgresql":
                    await lock.execute(text(f"SELECT pg_advisory_unlock({MAINTENANCE_LOCK})"))
                    await lock.commit()
        self.rounds += 1
        return Round(tuple(created), retention, collected)

    async def run(self) -> None:
        """Rounds until cancelled, the first at once."""
        while True:
            try:
                done = await self.run_once()
                if done.retention is not None and done.retention.dropped:
                    log.info(
                        "retention: %d calls older than %s removed (%d partitions)",
                        done.retention.calls,
                        done.retention.cutoff.isoformat(),
                        len(done.retention.dropped),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning("capture maintenance failed, retried later: %s", describe_error(exc))
            await asyncio.sleep(self.interval_s)


def start(maintenance: Maintenance) -> asyncio.Task[None]:
    return asyncio.create_task(maintenance.run(), name="capture-maintenance")


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
