"""Time partitions of the captured calls: listing, creating ahead, and dropping the old ones.

On PostgreSQL ``calls`` and ``feedback`` are natively range-partitioned on ``created_at``
(migration 0009): one partition per UTC day by default (``capture.partition``: day, week from
Monday, or month), named ``<table>_p<YYYYMMDD>`` after its first day, plus a DEFAULT partition
(``<table>_default``) so that no insert ever fails for want of a partition. Retention then drops
whole partitions, which is instant and leaves nothing for VACUUM, where ``DELETE`` leaves every
row's space behind (the table did not shrink at all after deleting half of it; issue 15).

- ``ensure_partitions`` creates the partitions of the periods around now (the previous day to
  ``AHEAD`` ahead); the capture writer calls it at start and every maintenance round. A period
  already partly covered (the unit was changed) gets partitions for its gaps only. Rows that
  landed in the DEFAULT partition are moved into the partition created for them.
- ``partitions`` lists them (oldest first, DEFAULT left out), for the archive (``capture.archive``)
  and ``gateway db prune``.
- ``drop_partitions_before`` drops every partition that ends at or before a cutoff, calling
  ``before_drop`` first for each partition of ``calls`` (the archive writes it out there). Calls'
  feedback is partitioned by the feedback's own time: the feedback of a dropped call that lies in
  a partition that stays is deleted first, and feedback partitions are dropped by the same cutoff.
  The dashboard's hourly rollup is rebuilt for the hours dropped (a DROP fires no trigger).

Why primary keys hold ``created_at``, and no foreign key points at ``calls``: PostgreSQL requires
a partitioned table's unique constraints to include the partition key, so ``calls.id`` alone can
no longer be unique and ``feedback.request_id`` cannot reference it. Ids are random (128 bits),
the writer's ``ON CONFLICT (id, created_at)`` still makes a retried batch a no-op (a retried row
carries the same time), feedback is only accepted for a call that exists (``Store.add_feedback``),
and lookups by id use the primary key's index (``id`` first) in each partition.

DDL here waits at most ``LOCK_TIMEOUT`` for its locks (creating or dropping a partition briefly
locks the parent table): a long export holding ``calls`` makes maintenance give up and retry at
its next round rather than queue every insert behind it.

SQLite keeps one plain table; the same API works over UTC days (``partitions`` lists the days
that hold calls; ``drop_partitions_before`` DELETEs them day by day).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from capture.schema import calls, feedback

Unit = Literal["day", "week", "month"]
Range = tuple[dt.datetime, dt.datetime]
UNITS: tuple[Unit, ...] = ("day", "week", "month")
TABLES = ("calls", "feedback")
"""The partitioned tables, parent first."""
AHEAD = dt.timedelta(days=3)
"""How far ahead of now partitions exist."""
BEHIND = dt.timedelta(days=1)
"""How far behind now ``ensure_partitions`` makes sure partitions exist (a writer's backlog)."""
LOCK_TIMEOUT = "5s"
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    """One partition: rows with ``start <= created_at < end`` (UTC) of ``table``."""

    table: str
    name: str
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed: the partitions dropped (SQLite: the days deleted), and rows."""

    cutoff: dt.datetime
    dropped: tuple[Partition, ...] = ()
    calls: int = 0
    """Calls removed (whole partitions and, for an exact prune, the boundary's older rows)."""
    feedback: int = 0


BeforeDrop = Callable[[Partition], Awaitable[None]]


# --- periods ------------------------------------------------------------------------------


def period_start(moment: dt.datetime, unit: Unit) -> dt.datetime:
    """The start (UTC midnight) of the day, Monday-week or month ``moment`` falls in."""
    day = moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


def period_end(start: dt.datetime, unit: Unit) -> dt.datetime:
    if unit == "day":
        return start + dt.timedelta(days=1)
    if unit == "week":
        return start + dt.timedelta(days=7)
    month = start.month % 12 + 1
    return start.replace(year=start.year + (start.month == 12), month=month, day=1)


def periods(
    start: dt.datetime, end: dt.datetime, unit: Unit
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The periods of ``unit`` that overlap ``[start, end)``, in order."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    at = period_start(start, unit)
    while at < end:
        nxt = period_end(at, unit)
        out.append((at, nxt))
        at = nxt
    return out


def gaps(
    want: tuple[dt.datetime, dt.datetime], have: Sequence[tuple[dt.datetime, dt.datetime]]
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The parts of ``want`` that no range of ``have`` covers."""
    pieces = [want]
    for lo, hi in have:
        next_pieces: list[tuple[dt.datetime, dt.datetime]] = []
        for start, end in pieces:
            if hi <= start or lo >= end:
                next_pieces.append((start, end))
                continue
            if start < lo:
                next_pieces.append((start, lo))
            if hi < end:
                next_pieces.append((hi, end))
        pieces = next_pieces
    return pieces


def partition_name(table: str, start: dt.datetime) -> str:
    return f"{table}_p{start.astimezone(dt.UTC):%Y%m%d}"


def _literal(moment: dt.datetime) -> str:
    return f"'{moment.astimezone(dt.UTC).isoformat()}'"


# --- PostgreSQL ---------------------------------------------------------------------------


async def is_partitioned(connection: AsyncConnection, table: str = "calls") -> bool:
    """Is ``table`` a partitioned table here (PostgreSQL at migration 0009 or later)?"""
    if connection.dialect.name != "postgresql":
        return False
    kind = await connection.scalar(
        text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:name)"), {"name": table}
    )
    return bool(kind == "p")


async def _list(connection: AsyncConnection, table: str) -> list[Partition]:
    rows = await connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:table)"
        ),
        {"table": table},
    )
    found: list[Partition] = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match is None:
            continue  # DEFAULT
        start, end = (dt.datetime.fromisoformat(v).astimezone(dt.UTC) for v in match.groups())
        found.append(Partition(table, name, start, end))
    found.sort(key=lambda p: p.start)
    return found


async def _sqlite_days(connection: AsyncConnection) -> list[Partition]:
    rows = await connection.execute(
        text("SELECT DISTINCT substr(created_at, 1, 10) FROM calls ORDER BY 1")
    )
    found = []
    for (day,) in rows:
        start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        found.append(
            Partition("calls", partition_name("calls", start), start, start + dt.timedelta(days=1))
        )
    return found


async def partitions(engine: AsyncEngine) -> list[Partition]:
    """Every partition of ``calls`` then of ``feedback``, each oldest first (DEFAULT left out).

    SQLite: one "partition" of ``calls`` per UTC day that holds calls.
    """
    async with engine.connect() as connection:
        if not await is_partitioned(connection):
            return await _sqlite_days(connection) if engine.dialect.name == "sqlite" else []
        return [p for table in TABLES for p in await _list(connection, table)]


async def _rebuild_rollup(
    connection: AsyncConnection, start: dt.datetime, end: dt.datetime
) -> None:
    """Rebuild the dashboard's hourly rollup (migration 0003) for the hours ``[start, end)``
    touches."""
    exists = await connection.scalar(
        text("SELECT to_regprocedure('dashboard_hourly_rebuild(timestamptz[])') IS NOT NULL")
    )
    if not exists:
        return
    await connection.execute(
        text(
            "SELECT dashboard_hourly_rebuild(ARRAY(SELECT generate_series("
            "CAST(:start AS timestamptz), CAST(:end AS timestamptz) - interval '1 hour',"
            " interval '1 hour')))"
        ),
        {"start": _hour(start), "end": _hour(end - dt.timedelta(microseconds=1)) + HOUR},
    )


HOUR = dt.timedelta(hours=1)


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


async def _create(
    connection: AsyncConnection, table: str, start: dt.datetime, end: dt.datetime
) -> Partition:
    """Create ``table``'s partition for ``[start, end)``, moving into it any rows the DEFAULT
    partition holds for that range (PostgreSQL refuses the partition while they are there)."""
    name = partition_name(table, start)
    default = f"{table}_default"
    bounds = {"start": start, "end": end}
    in_default = await connection.scalar(
        text(
            f"SELECT EXISTS (SELECT 1 FROM {default}"
            " WHERE created_at >= :start AND created_at < :end)"
        ),
        bounds,
    )
    if in_default:
        await connection.execute(
            text(
                f"CREATE TEMP TABLE moved_rows ON COMMIT DROP AS WITH gone AS (DELETE FROM"
                f" {default} WHERE created_at >= :start AND created_at < :end RETURNING *)"
                " SELECT * FROM gone"
            ),
            bounds,
        )
    await connection.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF {table}"
            f" FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
        )
    )
    if in_default:
        await connection.execute(text(f"INSERT INTO {table} SELECT * FROM moved_rows"))
        hours = await connection.execute(
            text(
                "SELECT min(created_at), max(created_at) FROM moved_rows"
                if table == "calls"
                else "SELECT min(c.created_at), max(c.created_at) FROM calls c"
                " JOIN moved_rows m ON m.request_id = c.id"
            )
        )
        low, high = hours.one()
        await connection.execute(text("DROP TABLE moved_rows"))
        if low is not None:
            # The rows moved were counted again by the insert trigger: recount their hours.
            await _rebuild_rollup(connection, low, high + HOUR)
    return Partition(table, name, start, end)


async def ensure_partitions(
    engine: AsyncEngine,
    unit: Unit = "day",
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    now: dt.datetime | None = None,
    tables: Sequence[str] = TABLES,
) -> list[Partition]:
    """Create the missing partitions of ``[start, end)`` (by default ``BEHIND`` before ``now``
    to ``AHEAD`` after it) in ``unit`` periods, for each partitioned table; the ones created.
    Nothing on a database without partitions (SQLite)."""
    moment = now or dt.datetime.now(dt.UTC)
    low = start or moment - BEHIND
    high = end or moment + AHEAD
    created: list[Partition] = []
    async with engine.begin() as connection:
        if not await is_partitioned(connection):
            return []
        await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        for table in tables:
            have = [(p.start, p.end) for p in await _list(connection, table)]
            for period in periods(low, high, unit):
                for gap_start, gap_end in gaps(period, have):
                    created.append(await _create(connection, table, gap_start, gap_end))
                    have.append((gap_start, gap_end))
    return created


async def adopt_default_rows(engine: AsyncEngine, unit: Unit = "day") -> list[Partition]:
    """Give the rows in a DEFAULT partition (inserted while no partition covered their time)
    partitions of their own, one per ``unit`` period that holds some; the partitions created."""
    created: list[Partition] = []
    for table in TABLES:
        async with engine.connect() as connection:
            if not await is_partitioned(connection):
                return []
            found = await connection.execute(
                text(
                    f"SELECT DISTINCT date_trunc('{unit}', created_at AT TIME ZONE 'UTC')"
                    f" FROM {table}_default"
                )
            )
            starts = sorted(start.replace(tzinfo=dt.UTC) for (start,) in found)
        for start in starts:
            created += await ensure_partitions(
                engine, unit, start=start, end=period_end(start, unit), tables=(table,)
            )
    return created


async def _count(connection: AsyncConnection, name: str) -> int:
    return int(await connection.scalar(text(f"SELECT count(*) FROM {name}")) or 0)


async def _drop_postgresql(
    engine: AsyncEngine, cutoff: dt.datetime, before_drop: BeforeDrop | None, unit: Unit
) -> PruneResult:
    """Archive (``before_drop``) the old partitions of ``calls`` in order, then drop those
    archived, and the old partitions of ``feedback``, in one transaction (a prune is all or
    nothing; each DROP briefly locks the parent table)."""
    await adopt_default_rows(engine, unit)
    old = [p for p in await partitions(engine) if p.end <= cutoff]
    ready: list[Partition] = []
    failure: BaseException | None = None
    for partition in (p for p in old if p.table == "calls"):
        if before_drop is not None:
            try:
                await before_drop(partition)
            except Exception as exc:  # keep it and the later ones; drop the ones before
                failure = exc
                break
        ready.append(partition)
    if failure is None:
        ready += [p for p in old if p.table == "feedback"]
    elif ready:
        # Only feedback no kept call can have: older than the first partition kept.
        ready += [p for p in old if p.table == "feedback" and p.end <= ready[-1].end]
    calls_removed = feedback_removed = 0
    if ready:
        async with engine.begin() as connection:
            await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            for partition in ready:
                rows = await _count(connection, partition.name)
                if partition.table == "calls":
                    calls_removed += rows
                    # Its calls' feedback in partitions that stay (feedback is never older than
                    # its call, short of clocks' skew between replicas).
                    orphaned = await connection.execute(
                        text(
                            f"DELETE FROM feedback WHERE created_at >= :start"
                            f" AND request_id IN (SELECT id FROM {partition.name})"
                        ),
                        {"start": partition.start},
                    )
                    feedback_removed += int(orphaned.rowcount)
                else:
                    feedback_removed += rows
                await connection.execute(text(f"DROP TABLE IF EXISTS {partition.name}"))
            dropped_calls = [p for p in ready if p.table == "calls"]
            if dropped_calls:
                await _rebuild_rollup(connection, dropped_calls[0].start, dropped_calls[-1].end)
    if failure is not None:
        raise failure
    return PruneResult(cutoff, tuple(ready), calls_removed, feedback_removed)


async def _drop_sqlite(
    engine: AsyncEngine, cutoff: dt.datetime, before_drop: BeforeDrop | None
) -> PruneResult:
    dropped: list[Partition] = []
    calls_removed = feedback_removed = 0
    for partition in await partitions(engine):
        if partition.end > cutoff:
            break
        if before_drop is not None:
            await before_drop(partition)
        in_range = (calls.c.created_at >= partition.start) & (calls.c.created_at < partition.end)
        async with engine.begin() as connection:
            old = calls.select().with_only_columns(calls.c.id).where(in_range)
            gone = await connection.execute(feedback.delete().where(feedback.c.request_id.in_(old)))
            feedback_removed += int(gone.rowcount)
            gone = await connection.execute(calls.delete().where(in_range))
            calls_removed += int(gone.rowcount)
        dropped.append(partition)
    return PruneResult(cutoff, tuple(dropped), calls_removed, feedback_removed)


async def drop_partitions_before(
    engine: AsyncEngine,
    cutoff: dt.datetime,
    before_drop: BeforeDrop | None = None,
    *,
    unit: Unit = "day",
) -> PruneResult:
    """Drop every partition that ends at or before ``cutoff`` (only whole partitions: rows of
    the partition holding ``cutoff`` stay), calling ``before_drop(partition)`` first for each
    partition of ``calls``; if it raises, that partition and the later ones stay.

    PostgreSQL: ``DROP TABLE`` per partition, its calls' feedback in later partitions deleted
    with it; feedback partitions are dropped by the same cutoff. SQLite: each UTC day's calls
    and their feedback deleted, one transaction per day. ``unit`` is only used to give rows
    found in a DEFAULT partition partitions of their own first (so the archive sees them).
    """
    if cutoff.tzinfo is None:
        raise ValueError("naive datetime given as the cutoff")
    async with engine.connect() as connection:
        partitioned = await is_partitioned(connection)
    if partitioned:
        return await _drop_postgresql(engine, cutoff, before_drop, unit)
    return await _drop_sqlite(engine, cutoff, before_drop)
