from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import orjson
import pytest
from sqlalchemy.engine import make_url

from capture.config import CaptureSettings
from capture.engine import create_engine
from capture.migrate import upgrade
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.factories import make_record, make_stream_record
from tests.capture.tcp_proxy import TcpProxy


def fast(**overrides: Any) -> CaptureSettings:
    """Small batches, short waits: the tests see batches land within milliseconds."""
    values = {"batch_size": 50, "flush_interval_ms": 20, "retry_max_backoff_s": 0.2}
    return CaptureSettings.model_validate({**values, **overrides})


class CountingStore(Store):
    """A real store that also remembers the size of each batch it was given."""

    batches: list[int]

    async def insert_calls(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await super().insert_calls(rows)
        self.batches.append(len(rows))


async def counting_store(url: str, **options: Any) -> CountingStore:
    plain = await Store.connect(url, **options)
    store = CountingStore(plain.engine)
    store.batches = []
    return store


def run(url: str, scenario: Callable[[CountingStore], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        store = await counting_store(url, **options)
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("prepare", ["loop", "thread"])
def test_batches_land(database_url: str, prepare: Literal["loop", "thread"]) -> None:
    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast(), prepare=prepare)
        await writer.start()
        records = [make_stream_record(["x"]) if i % 3 else make_record() for i in range(230)]
        assert all(writer.submit(record) for record in records)
        await writer.flush()
        assert writer.written == 230 and writer.queue_depth == 0
        assert await store.count_calls() == 230
        assert sum(store.batches) == 230 and max(store.batches) <= 50
        assert await writer.drain(5)
        assert writer.stats() == {
            "written": 230,
            "dropped": 0,
            "retried": 0,
            "failed": 0,
            "sampled_out": 0,
            "normalize_failed": 0,
            "unpriced": {},
            "queue_depth": 0,
            "queue_size": 10_000,
            "store_up": True,
        }

    run(database_url, scenario)


def test_a_lone_record_is_written_after_the_flush_interval(database_url: str) -> None:
    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast())
        await writer.start()
        record = make_record()
        writer.submit(record)
        for _ in range(200):  # up to 2 s
            if writer.written:
                break
            await asyncio.sleep(0.01)
        assert writer.written == 1 and store.batches == [1]
        assert await store.get_call(record.id) is not None
        await writer.drain(5)

    run(database_url, scenario)


def test_stream_and_non_stream_calls_are_stored_with_tokens_cost_and_timings(
    database_url: str,
) -> None:
    plain = make_record(total_ms=812.5, upstream_ms=811.9, overhead_ms=0.6, tags={"a": "b"})
    streamed = make_stream_record(
        ["The ", "capital ", "is ", "Paris."], total_ms=1500.0, ttft_ms=95.5, overhead_ms=0.4
    )

    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast())
        await writer.start()
        writer.submit(plain)
        writer.submit(streamed)
        assert await writer.drain(5)
        got = await store.get_call(plain.id)
        assert got is not None
        assert (got["prompt_tokens"], got["completion_tokens"], got["cached_tokens"]) == (
            1000,
            200,
            400,
        )
        assert got["cost_usd"] == pytest.approx((600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6)
        assert (got["total_ms"], got["upstream_ms"], got["overhead_ms"], got["ttft_ms"]) == (
            812.5,
            811.9,
            0.6,
            None,
        )
        assert got["finish_reason"] == "stop" and got["stream"] is False
        assert got["tags"] == {"a": "b"}
        got = await store.get_call(streamed.id)
        assert got is not None
        assert got["response"]["choices"][0]["message"]["content"] == "The capital is Paris."
        assert (got["prompt_tokens"], got["completion_tokens"]) == (30, 4)
        assert got["cost_usd"] == pytest.approx((30 * 0.15 + 4 * 0.60) / 1e6)
        assert (got["total_ms"], got["ttft_ms"], got["overhead_ms"]) == (1500.0, 95.5, 0.4)
        assert got["stream"] is True and got["finish_reason"] == "stop"

    run(database_url, scenario)


def test_a_full_queue_drops_and_counts_and_submit_does_not_wait(database_url: str) -> None:
    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast(queue_size=5))
        accepted = [writer.submit(make_record()) for _ in range(8)]  # not started: nobody drains
        assert accepted == [True] * 5 + [False] * 3
        assert writer.dropped == 3 and writer.queue_depth == 5
        await writer.start()
        assert await writer.drain(5)
        assert writer.written == 5 and await store.count_calls() == 5
        assert writer.submit(make_record()) is False  # stopped
        assert writer.dropped == 4

    run(database_url, scenario)


def test_drain_writes_everything_queued_at_once(database_url: str) -> None:
    settings = CaptureSettings(batch_size=10_000, flush_interval_ms=600_000)

    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, settings)
        await writer.start()
        for _ in range(300):
            writer.submit(make_record())
        await asyncio.sleep(0.05)
        assert writer.written == 0  # waiting for a full batch or the (long) interval
        assert await writer.drain(10)
        assert writer.written == 300 and await store.count_calls() == 300

    run(database_url, scenario)


def test_unpriced_models_are_counted_by_model(database_url: str) -> None:
    unknown = orjson.dumps({"model": "llama-3-70b", "usage": {"prompt_tokens": 5}})

    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast())
        await writer.start()
        for _ in range(3):
            writer.submit(make_record(upstream_model="llama-3-70b", response_body=unknown))
        writer.submit(make_record())
        await writer.drain(5)
        assert writer.stats()["unpriced"] == {"llama-3-70b": 3}

    run(database_url, scenario)


def test_garbage_does_not_stop_the_writer(database_url: str) -> None:
    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast())
        await writer.start()
        assert writer.submit(object()) is False  # type: ignore[arg-type]
        weird = make_record()
        weird.started_at = "yesterday"  # type: ignore[assignment]
        writer.submit(weird)
        writer.submit(make_record())
        assert await writer.drain(5)
        assert writer.written == 2
        got = await store.get_call(weird.id)
        assert got is not None and "could not prepare" in got["error"]

    run(database_url, scenario)


def test_sampling() -> None:
    values = iter([0.1, 0.9, 0.2, 0.7])
    store = Store(create_engine("sqlite+aiosqlite://"))  # never connected
    writer = CaptureWriter(store, CaptureSettings(sample=0.5), sample_random=lambda: next(values))
    assert [writer.should_capture() for _ in range(4)] == [True, False, True, False]
    assert writer.sampled_out == 2
    assert CaptureWriter(store, CaptureSettings(enabled=False)).should_capture() is False


# --- the database goes away for a while --------------------------------------------------------


async def _submit_while_down(writer: CaptureWriter, count: int) -> None:
    for index in range(count):
        assert writer.submit(make_record() if index % 2 else make_stream_record(["a", "b"]))
        if index % 25 == 0:
            await asyncio.sleep(0.02)


def test_postgresql_unreachable_for_a_while_loses_nothing(postgres_url: str) -> None:
    upgrade(postgres_url)
    target = make_url(postgres_url)

    async def scenario() -> None:
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        await proxy.on()
        proxied = target.set(host="127.0.0.1", port=proxy.port)
        store = await Store.connect(proxied.render_as_string(hide_password=False))
        writer = CaptureWriter(store, fast())
        await writer.start()
        try:
            for _ in range(50):
                writer.submit(make_record())
            await writer.flush()
            assert writer.written == 50

            await proxy.off()  # connections cut, new ones refused
            await _submit_while_down(writer, 200)
            await asyncio.sleep(0.3)
            assert writer.written == 50
            assert writer.retried > 0
            assert writer.queue_depth == 200

            await proxy.on()
            assert await writer.drain(15)
            assert (writer.written, writer.failed, writer.dropped) == (250, 0, 0)
        finally:
            await writer.stop()
            await store.close()
            await proxy.off()
        direct = await Store.connect(postgres_url)
        try:
            assert await direct.count_calls() == 250
        finally:
            await direct.close()

    asyncio.run(scenario())


def test_sqlite_locked_for_a_while_loses_nothing(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    path = make_url(sqlite_url).database
    assert path is not None

    async def scenario(store: CountingStore) -> None:
        writer = CaptureWriter(store, fast())
        await writer.start()
        for _ in range(50):
            writer.submit(make_record())
        await writer.flush()
        assert writer.written == 50

        # The blocker's calls run in a thread: on the event loop, its wait for the lock would
        # stop the loop, and with it a write of ours that holds the lock until the loop runs.
        blocker = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            # every other writer gets "database is locked"
            await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
            await _submit_while_down(writer, 200)
            await asyncio.sleep(0.3)
            assert writer.written == 50 and writer.retried > 0
        finally:
            if blocker.in_transaction:
                await asyncio.to_thread(blocker.execute, "ROLLBACK")
            blocker.close()
        assert await writer.drain(15)
        assert (writer.written, writer.failed) == (250, 0)
        assert await store.count_calls() == 250

    run(sqlite_url, scenario, sqlite_busy_timeout_ms=20)


def test_drain_gives_up_at_its_deadline_and_counts_what_it_gave_up(postgres_url: str) -> None:
    upgrade(postgres_url)
    target = make_url(postgres_url)

    async def scenario() -> None:
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        await proxy.on()
        await proxy.off()  # the port is known, and nothing listens on it
        proxied = target.set(host="127.0.0.1", port=proxy.port)
        store = await Store.connect(proxied.render_as_string(hide_password=False))
        writer = CaptureWriter(store, fast())
        await writer.start()
        try:
            for _ in range(120):
                writer.submit(make_record())
            assert await writer.drain(0.5) is False
            assert (writer.written, writer.failed, writer.queue_depth) == (0, 120, 0)
            assert writer.retried > 0
        finally:
            await store.close()

    asyncio.run(scenario())
