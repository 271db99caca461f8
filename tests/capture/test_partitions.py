"""Time partitions (``capture.partitions``) and retention by them (``capture.retention``), on
PostgreSQL (native partitions) and SQLite (the same API over days, by DELETE)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text

from capture.config import CaptureSettings
from capture.partitions import (
    Partition,
    adopt_default_rows,
    drop_partitions_before,
    ensure_partitions,
    gaps,
    partitions,
    period_end,
    period_start,
    periods,
)
from capture.prepare import Preparer
from capture.retention import Maintenance
from capture.schema import calls, feedback
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.factories import make_record

UTC = dt.UTC
NOON = dt.datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
DAY = dt.timedelta(days=1)


def at(days: float, hours: float = 0) -> dt.datetime:
    return NOON + dt.timedelta(days=days, hours=hours)


def run(url: str, scenario: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = await Store.connect(url)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(go())


def call_at(moment: dt.datetime, **fields: Any) -> dict[str, Any]:
    record = make_record(started_at=moment.timestamp(), **fields)
    return Preparer(CaptureSettings()).prepare(record).row


async def ids(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return set((await connection.execute(select(calls.c.id))).scalars())


async def count(store: Store, sql: str) -> int:
    async with store.engine.connect() as connection:
        return int(await connection.scalar(text(sql)) or 0)


# --- periods ------------------------------------------------------------------------------


def test_periods_are_utc_days_monday_weeks_and_months() -> None:
    moment = dt.datetime(2026, 12, 5, 17, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert period_start(moment, "day") == dt.datetime(2026, 12, 5, tzinfo=UTC)
    assert period_start(moment, "week") == dt.datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
    assert period_start(moment, "month") == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end(dt.datetime(2026, 12, 1, tzinfo=UTC), "month") == dt.datetime(
        2027, 1, 1, tzinfo=UTC
    )
    spans = periods(
        dt.datetime(2026, 12, 30, tzinfo=UTC), dt.datetime(2027, 2, 2, tzinfo=UTC), "month"
    )
    assert [s.month for s, _ in spans] == [12, 1, 2]


def test_gaps_leave_out_what_is_covered() -> None:
    d = [dt.datetime(2026, 12, n, tzinfo=UTC) for n in range(1, 10)]
    assert gaps((d[0], d[7]), [(d[1], d[2]), (d[4], d[5])]) == [
        (d[0], d[1]),
        (d[2], d[4]),
        (d[5], d[7]),
    ]
    assert gaps((d[1], d[2]), [(d[0], d[3])]) == []


# --- PostgreSQL: the partitions themselves ------------------------------------------------


def test_calls_outside_every_partition_are_kept_then_given_their_own(postgres_url: str) -> None:
    from capture.migrate import upgrade

    upgrade(postgres_url)
    far = [call_at(at(40)), call_at(at(-20)), call_at(at(-20, 5))]

    async def scenario(store: Store) -> tuple[int, list[Partition], list[Any], int, int]:
        await store.insert_calls(far)  # no partition covers them: the DEFAULT one takes them
        await store.add_feedback(far[1]["id"], 0.5, now=at(-20, 1))
        in_default = await count(store, "SELECT count(*) FROM calls_default")
        created = await adopt_default_rows(store.engine)
        read = [await store.get_call(row["id"]) for row in far]
        await store.engine.dispose()
        async with store.engine.begin() as connection:
            await connection.execute(text("SELECT dashboard_hourly_fold()"))
        rolled = await count(store, "SELECT sum(calls) FROM dashboard_hourly")
        return (
            in_default,
            created,
            read,
            await count(store, "SELECT count(*) FROM calls_default"),
            rolled,
        )

    in_default, created, read, left, rolled = run(postgres_url, scenario)
    assert in_default == 3 and left == 0
    assert {(p.table, p.start) for p in created} == {
        ("calls", period_start(at(40), "day")),
        ("calls", period_start(at(-20), "day")),
        ("feedback", period_start(at(-20), "day")),
    }
    assert [row["id"] for row in read if row] == [row["id"] for row in far]
    assert rolled == 3  # moved rows are not counted twice by the dashboard's rollup


def test_a_new_unit_fills_only_the_gaps(postgres_url: str) -> None:
    from capture.migrate import upgrade

    upgrade(postgres_url)

    async def scenario(store: Store) -> tuple[list[Partition], int]:
        await ensure_partitions(store.engine, "month", start=at(0), end=at(70))
        found = await partitions(store.engine)
        rows = [call_at(at(n, 0.5)) for n in range(-1, 70, 3)]
        await store.insert_calls(rows)
        return found, await count(store, "SELECT count(*) FROM calls_default")

    found, in_default = run(postgres_url, scenario)
    for table in ("calls", "feedback"):
        mine = [p for p in found if p.table == table]
        assert all(a.end == b.start for a, b in itertools.pairwise(mine))  # no overlap
        assert any(p.end - p.start > dt.timedelta(days=20) for p in mine)  # months after days
    assert in_default == 0


# --- both backends: dropping ----------------------------------------------------------------


def test_drop_partitions_before_archives_then_drops_whole_partitions(database_url: str) -> None:
    old, older, recent, boundary = (
        call_at(at(-5)),
        call_at(at(-10)),
        call_at(at(-1)),
        call_at(at(-3, -1)),  # older than the cutoff, in the partition that holds it
    )
    cutoff = at(-3)
    seen: list[tuple[Partition, set[str]]] = []

    async def scenario(store: Store) -> tuple[Any, set[str], int]:
        await store.insert_calls([old, older, recent, boundary])
        await store.add_feedback(older["id"], 1.0, now=at(-10, 1))
        await store.add_feedback(older["id"], 0.0, now=at(-1))  # a later partition's feedback
        await store.add_feedback(older["id"], 0.5, now=at(-3, -0.5))  # the boundary's
        await store.add_feedback(recent["id"], 1.0, now=at(-1, 1))

        async def before_drop(partition: Partition) -> None:
            async with store.engine.connect() as connection:
                inside = await connection.execute(
                    select(calls.c.id).where(
                        calls.c.created_at >= partition.start, calls.c.created_at < partition.end
                    )
                )
                seen.append((partition, set(inside.scalars())))

        result = await drop_partitions_before(store.engine, cutoff, before_drop)
        async with store.engine.connect() as connection:
            left = await connection.scalar(select(func.count()).select_from(feedback))
        return result, await ids(store), int(left or 0)

    result, kept, feedback_left = run(database_url, scenario)
    assert [p.start for p, _ in seen] == [period_start(at(-10), "day"), period_start(at(-5), "day")]
    assert [found for _, found in seen] == [{older["id"]}, {old["id"]}]
    assert all(p.table == "calls" for p, _ in seen)
    assert kept == {recent["id"], boundary["id"]}
    assert result.calls == 2
    assert feedback_left == 1  # the dropped call's later feedback went with it
    assert result.feedback == 3


def test_a_failing_before_drop_keeps_that_partition_and_the_later_ones(database_url: str) -> None:
    rows = [call_at(at(-9)), call_at(at(-8)), call_at(at(-7))]

    async def scenario(store: Store) -> set[str]:
        await store.insert_calls(rows)
        calls_seen: list[Partition] = []

        async def before_drop(partition: Partition) -> None:
            calls_seen.append(partition)
            if len(calls_seen) == 2:
                raise RuntimeError("the archive is down")

        with pytest.raises(RuntimeError):
            await drop_partitions_before(store.engine, at(-1), before_drop)
        return await ids(store)

    assert run(database_url, scenario) == {rows[1]["id"], rows[2]["id"]}


def test_prune_is_exact_and_drops_what_it_can(database_url: str) -> None:
    rows = [call_at(at(-d, h)) for d in range(0, 6) for h in (-6, 0, 6)]
    older_than = dt.timedelta(days=2, hours=3)
    cutoff = NOON - older_than

    async def scenario(store: Store) -> tuple[Any, set[str]]:
        await store.insert_calls(rows)
        result = await store.prune_partitions(older_than, now=NOON)
        return result, await ids(store)

    result, kept = run(database_url, scenario)
    assert kept == {row["id"] for row in rows if row["created_at"] >= cutoff}
    assert result.calls == len(rows) - len(kept)
    assert result.dropped  # whole days went as partitions (SQLite: as days)


def test_maintenance_keeps_retention_days_and_at_most_one_partition_more(
    database_url: str,
) -> None:
    inside = call_at(at(-3, -1))  # older than 3 days, but its day is not over 3 days ago
    outside = call_at(at(-4, 11.5))  # its whole day is
    fresh = call_at(at(0))

    async def scenario(store: Store) -> tuple[set[str], Any]:
        await store.insert_calls([inside, outside, fresh])
        maintenance = Maintenance(store.engine, retention_days=3)
        done = await maintenance.run_once(now=NOON)
        return await ids(store), done

    kept, done = run(database_url, scenario)
    assert kept == {inside["id"], fresh["id"]}
    assert done.retention is not None and done.retention.calls == 1
    if database_url.startswith("postgresql"):
        # Their days had no partition yet (made from yesterday on): given theirs, then dropped.
        starts = {p.start for p in done.created if p.table == "calls"}
        assert starts == {period_start(at(-4), "day"), period_start(at(-3), "day")}
        dropped = [p.start for p in done.retention.dropped if p.table == "calls"]
        assert dropped == [period_start(at(-4), "day")]


# --- the writer's maintenance -----------------------------------------------------------------


def test_the_writer_keeps_partitions_ahead_and_retention(database_url: str) -> None:
    old, fresh = call_at(at(-9)), call_at(at(0))

    async def scenario(store: Store) -> tuple[list[Partition], set[str], bool]:
        await store.insert_calls([old, fresh])
        postgresql = store.dialect == "postgresql"
        if postgresql:  # as after three days without a gateway running
            for partition in await partitions(store.engine):
                if partition.start > NOON:
                    async with store.engine.begin() as connection:
                        await connection.execute(text(f"DROP TABLE {partition.name}"))
        writer = CaptureWriter(store, CaptureSettings(retention_days=7))
        await writer.start()
        assert writer.maintenance is not None
        for _ in range(200):
            if writer.maintenance.rounds:
                break
            await asyncio.sleep(0.05)
        task = writer._maintenance_task
        await writer.drain(5)
        assert task is not None and task.done()  # stopped with the writer
        return await partitions(store.engine), await ids(store), postgresql

    found, kept, postgresql = run(database_url, scenario)
    assert kept == {fresh["id"]}
    if postgresql:
        ahead = {p.start for p in found if p.table == "calls"}
        assert period_start(at(3), "day") in ahead
