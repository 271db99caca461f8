"""One bad record costs only itself: the rest of its batch is stored, exactly one is counted
as failed, and logging it never recurses or repeats its body."""

from __future__ import annotations

import asyncio
import logging

import pytest

from capture.config import CaptureSettings
from capture.record import CallRecord
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.factories import chat_request, make_record, make_stream_record

DEPTH = 1_000
MARKER = "needle-in-the-body"


def deep_body() -> bytes:
    """A chat body whose messages are nested 1,000 lists deep (orjson serialises 254)."""
    return (
        b'{"model":"gpt-4o-mini","note":"'
        + MARKER.encode()
        + b'","messages":'
        + (b"[" * DEPTH + b"]" * DEPTH + b"}")
    )


def normal(index: int) -> CallRecord:
    return make_stream_record(["a", "b"]) if index % 3 == 0 else make_record()


def run_batch(url: str, bad: CallRecord) -> tuple[CaptureWriter, list[CallRecord], int]:
    """30 normal records, ``bad``, 30 more, all in one batch; returns the writer, the normal
    records and how many rows the store holds."""
    before = [normal(i) for i in range(30)]
    after = [normal(i) for i in range(30)]

    async def scenario() -> tuple[CaptureWriter, int]:
        store = await Store.connect(url)
        try:
            writer = CaptureWriter(store, CaptureSettings(batch_size=100, flush_interval_ms=50))
            for record in (*before, bad, *after):
                assert writer.submit(record)
            await writer.start()
            await asyncio.wait_for(writer.drain(30), 60)
            for record in (*before, *after):
                assert await store.get_call(record.id) is not None, record.id
            assert await store.get_call(bad.id) is None
            return writer, await store.count_calls()
        finally:
            await store.close()

    writer, count = asyncio.run(scenario())
    return writer, [*before, *after], count


def assert_logged_once_safely(caplog: pytest.LogCaptureFixture, bad: CallRecord) -> None:
    lines = [r for r in caplog.records if r.name.startswith("capture")]
    rejected = [r for r in lines if r.levelno >= logging.ERROR]
    assert len(rejected) == 1, [r.getMessage() for r in lines]
    message = rejected[0].getMessage()
    assert bad.id in message and "rejected" in message
    assert len(message) < 600
    for record in lines:
        assert MARKER not in record.getMessage()
        assert record.exc_info is None or not isinstance(record.exc_info[1], RecursionError)


def test_a_body_too_deep_to_serialise_costs_only_itself(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="capture")
    bad = make_record(request_body=deep_body())
    writer, others, count = run_batch(database_url, bad)
    assert (writer.written, writer.failed, writer.dropped) == (60, 1, 0)
    assert count == len(others) == 60
    assert_logged_once_safely(caplog, bad)


def test_a_row_the_database_refuses_costs_only_itself(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="capture")
    bad = make_record(status=2**70, request_body=chat_request(MARKER))  # no integer column holds it
    writer, others, count = run_batch(database_url, bad)
    assert (writer.written, writer.failed, writer.dropped) == (60, 1, 0)
    assert count == len(others) == 60
    assert_logged_once_safely(caplog, bad)


def test_several_bad_records_in_a_batch_are_each_counted_once(database_url: str) -> None:
    async def scenario() -> None:
        store = await Store.connect(database_url)
        try:
            writer = CaptureWriter(store, CaptureSettings(batch_size=200, flush_interval_ms=50))
            bad = {5, 6, 77, 150, 199}
            records = [
                make_record(request_body=deep_body()) if i in bad else normal(i) for i in range(200)
            ]
            for record in records:
                assert writer.submit(record)
            await writer.start()
            assert await asyncio.wait_for(writer.drain(30), 60) is False  # some were given up
            assert (writer.written, writer.failed) == (195, 5)
            assert await store.count_calls() == 195
        finally:
            await store.close()

    asyncio.run(scenario())
