from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from capture.config import CaptureSettings
from capture.migrate import upgrade
from capture.prepare import Preparer
from capture.retention import parse_duration, prune
from capture.store import Store
from tests.capture.factories import make_record


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", dt.timedelta(days=30)),
        ("12h", dt.timedelta(hours=12)),
        ("90m", dt.timedelta(minutes=90)),
        ("45s", dt.timedelta(seconds=45)),
        ("2w", dt.timedelta(weeks=2)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        (" 1.5h ", dt.timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d30", "30x", "0d", "30 days", "-1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_prune_by_url(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    preparer = Preparer(CaptureSettings())
    now = dt.datetime.now(dt.UTC).timestamp()
    old = preparer.prepare(make_record(started_at=now - 40 * 86400)).row
    new = preparer.prepare(make_record(started_at=now)).row

    async def scenario() -> int:
        store = await Store.connect(sqlite_url)
        await store.insert_calls([old, new])
        await store.close()
        return await prune(sqlite_url, parse_duration("30d"))

    assert asyncio.run(scenario()) == 1
