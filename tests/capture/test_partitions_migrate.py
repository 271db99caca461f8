"""Migration 0009 on a database written through the previous schema (0008): every record of every
table, every column, is the same after the upgrade (PostgreSQL: calls and feedback copied into
partitioned tables) and after the downgrade back."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from typing import Any

from sqlalchemy import Column, LargeBinary, MetaData, String, Table, insert, text

from capture.config import CaptureSettings
from capture.content import CONTENT_KEY, encode
from capture.migrate import current, downgrade, head, upgrade
from capture.partitions import is_partitioned, partitions
from capture.prepare import Preparer
from capture.record import CallRecord
from capture.schema import UTCDateTime, calls
from capture.store import Store
from tests.capture.chat_view import simple_chat_view
from tests.capture.factories import make_record
from tests.capture.test_content import shapes

DAY = 86400.0
content_0008 = Table(
    "content",
    MetaData(),
    Column("hash", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("body", LargeBinary(), nullable=False),
)
SNAPSHOTS = {
    "calls": "SELECT * FROM calls ORDER BY id",
    "feedback": "SELECT * FROM feedback ORDER BY id",
    "content": "SELECT hash, created_at, body FROM content ORDER BY hash",
}
DASHBOARD = "SELECT * FROM dashboard_hourly ORDER BY hour, route, variant"


def _records() -> list[CallRecord]:
    """Every shape the capture stores (content refs, streams, Anthropic with its normalized
    view, redaction), some as shadows of others, spread over 45 days and both sides of midnight."""
    now = time.time()
    records: list[CallRecord] = []
    for index, record in enumerate(shapes() * 2):
        started = now - (index % 9) * 5 * DAY - (index * 3571.0) % DAY
        shadow_of = records[-1].id if index % 5 == 4 else None
        records.append(
            dataclasses.replace(record, id=f"{index:02d}{record.id[2:]}", started_at=started)
        )
        if shadow_of:
            records[-1] = dataclasses.replace(records[-1], shadow_of=shadow_of, variant="student")
    return records


def _write_through_0008(url: str) -> list[str]:
    """Rows as the 0008 code wrote them: content parts, calls (some with refs), feedback."""
    preparer = Preparer(CaptureSettings(content_store=True), simple_chat_view)
    rows = [preparer.prepare(record).row for record in _records()]
    parts: dict[str, Any] = {}
    for row in rows:
        parts.update(row.pop(CONTENT_KEY, None) or {})
    assert parts, "the workload refers to content"
    assert any(row.get("normalized") for row in rows) and any(row["shadow_of"] for row in rows)

    async def write() -> None:
        store = await Store.connect(url)
        try:
            async with store.engine.begin() as connection:
                now = dt.datetime.now(dt.UTC)
                await connection.execute(
                    insert(content_0008),
                    [
                        {"hash": h, "created_at": now, "body": encode(p)}
                        for h, p in sorted(parts.items())
                    ],
                )
                await connection.execute(insert(calls), rows)
            for index, row in enumerate(rows[::2]):
                at = row["created_at"] + dt.timedelta(hours=index % 30)
                await store.add_feedback(row["id"], index / 10, f"l{index}", "why", now=at)
        finally:
            await store.close()

    asyncio.run(write())
    return [row["id"] for row in rows]


def _snapshot(url: str, dashboard: bool) -> dict[str, list[tuple[Any, ...]]]:
    async def read() -> dict[str, list[tuple[Any, ...]]]:
        store = await Store.connect(url)
        try:
            async with store.engine.connect() as connection:
                queries = dict(SNAPSHOTS, **({"dashboard": DASHBOARD} if dashboard else {}))
                return {
                    table: [tuple(row) for row in await connection.execute(text(query))]
                    for table, query in queries.items()
                }
        finally:
            await store.close()

    return asyncio.run(read())


def _utc(value: Any) -> dt.datetime:
    """A time as read raw: a datetime (PostgreSQL) or ISO text in UTC (SQLite)."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


def _partitioned(url: str) -> bool:
    async def read() -> bool:
        store = await Store.connect(url)
        try:
            async with store.engine.connect() as connection:
                return await is_partitioned(connection)
        finally:
            await store.close()

    return asyncio.run(read())


def test_0009_keeps_every_record_up_and_down(empty_url: str) -> None:
    postgresql = empty_url.startswith("postgresql")
    upgrade(empty_url, "0008")
    ids = _write_through_0008(empty_url)
    before = _snapshot(empty_url, postgresql)
    assert len(before["calls"]) == len(ids) and len(before["feedback"]) == len(ids[::2])

    upgrade(empty_url)
    assert current(empty_url) == head() == "0010"
    assert _partitioned(empty_url) is postgresql
    assert _snapshot(empty_url, postgresql) == before

    async def after_upgrade() -> tuple[list[Any], dict[str, Any] | None, int]:
        store = await Store.connect(empty_url)
        try:
            found = await partitions(store.engine)
            # The write path and the feedback path work on the new layout; ids go on.
            row = Preparer(CaptureSettings(content_store=True)).prepare(make_record()).row
            await store.insert_calls([row])
            await store.insert_calls([row])  # a retried batch is a no-op
            feedback_id = await store.add_feedback(row["id"], 1.0)
            return found, await store.get_call(ids[0]), feedback_id
        finally:
            await store.close()

    found, first, feedback_id = asyncio.run(after_upgrade())
    assert first is not None and first["id"] == ids[0]
    assert feedback_id > max(row[0] for row in before["feedback"])
    days = {_utc(row[1]).date() for row in before["calls"]}
    covered = {p.start.date() for p in found if p.table == "calls"}
    assert days <= covered

    downgrade(empty_url, "0008")
    assert current(empty_url) == "0008"
    assert not _partitioned(empty_url)
    back = _snapshot(empty_url, postgresql)
    old_ids = set(ids)
    assert [row for row in back["calls"] if row[0] in old_ids] == before["calls"]
    assert [row for row in back["feedback"] if row[0] in {r[0] for r in before["feedback"]}] == (
        before["feedback"]
    )
    old_hashes = {row[0] for row in before["content"]}
    assert [row for row in back["content"] if row[0] in old_hashes] == before["content"]
    if postgresql:
        upgrade(empty_url)  # and up again from the downgraded layout
        assert _partitioned(empty_url)


def test_0009_on_an_empty_database_makes_partitions_ahead(postgres_url: str) -> None:
    upgrade(postgres_url)

    async def read() -> list[Any]:
        store = await Store.connect(postgres_url)
        try:
            return await partitions(store.engine)
        finally:
            await store.close()

    found = asyncio.run(read())
    today = dt.datetime.now(dt.UTC).date()
    for table in ("calls", "feedback"):
        starts = [p.start.date() for p in found if p.table == table]
        assert starts == [today + dt.timedelta(days=n) for n in range(-1, 4)]
