"""The capture writer in a process of its own (``capture.writer_process``), against real
databases and a real child process: what is submitted is stored, the bound drops and counts,
an outage loses nothing within the queue, drain writes everything, a writer process that dies
is counted and replaced, and one whose gateway died writes what it holds before it exits."""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest
from sqlalchemy.engine import make_url

from capture.config import CaptureSettings
from capture.migrate import upgrade
from capture.store import Store
from capture.writer_process import MAX_UNREAD_BYTES, ProcessWriter
from tests.capture.factories import make_anthropic_record, make_record
from tests.capture.tcp_proxy import TcpProxy
from tests.capture_support import until

NORMALIZE = "dialects.capture:chat_view"


def child_of(writer: ProcessWriter) -> psutil.Process:
    process = writer._process
    assert process is not None
    return psutil.Process(process.pid)


async def proxied_url(postgres_url: str, proxy: TcpProxy) -> str:
    await proxy.on()
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


def new_proxy(postgres_url: str) -> TcpProxy:
    target = make_url(postgres_url)
    return TcpProxy(target.host or "127.0.0.1", target.port or 5432)


def fast(url: str, **overrides: object) -> CaptureSettings:
    values: dict[str, object] = {
        "database_url": url,
        "batch_size": 50,
        "flush_interval_ms": 20,
        "connect_timeout_s": 1.0,
        "statement_timeout_s": 2.0,
    }
    values.update(overrides)
    return CaptureSettings.model_validate(values)


async def stored_ids(url: str) -> set[str]:
    from sqlalchemy import text

    store = await Store.connect(url)
    try:
        async with store.engine.connect() as connection:
            rows = await connection.execute(text("SELECT id FROM calls"))
            return {row[0] for row in rows}
    finally:
        await store.close()


def test_records_are_prepared_and_stored_by_a_process_of_their_own(database_url: str) -> None:
    async def scenario() -> None:
        writer = ProcessWriter(fast(database_url), normalize=NORMALIZE)
        await writer.start()
        child = child_of(writer)
        assert child.pid != os.getpid() and child.ppid() == os.getpid()
        # The settings (a database password among them) go through the pipe, not the command
        # line that any user of the machine can read.
        assert child.cmdline()[-3:] == ["-m", "capture.writer_main", "idle"]
        # Calls come first: the writer lowers its priority before it imports anything heavy.
        assert await until(lambda: os.sched_getscheduler(child.pid) == os.SCHED_IDLE, 10)
        records = [make_record() for _ in range(200)] + [make_anthropic_record() for _ in range(20)]
        for record in records:
            assert writer.submit(record)
        assert writer.is_pending(records[0].id)
        await asyncio.wait_for(writer.flush(), 30)
        assert not writer.is_pending(records[0].id) and not writer.is_pending(records[-1].id)
        stats = writer.stats()
        assert stats["written"] == 220 and stats["failed"] == 0 and stats["dropped"] == 0
        assert stats["queue_depth"] == 0 and stats["store_up"] is True
        assert await stored_ids(database_url) == {record.id for record in records}

        store = await Store.connect(database_url)
        try:
            row = await store.get_call(records[-1].id)
        finally:
            await store.close()
        assert row is not None and row["normalized"] is not None  # the named normaliser ran

        assert await writer.drain(10)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert not writer.submit(make_record())
        assert writer.stats()["dropped"] == 1

    asyncio.run(scenario())


def test_drain_writes_everything_submitted_and_the_process_exits(sqlite_url: str) -> None:
    upgrade(sqlite_url)

    async def scenario() -> None:
        settings = fast(sqlite_url, batch_size=1000, flush_interval_ms=60_000)
        writer = ProcessWriter(settings)
        for _ in range(30):  # before start: kept and sent
            writer.submit(make_record())
        await writer.start()
        records = [make_record() for _ in range(500)]
        for record in records:
            writer.submit(record)
        # Far from a full batch and its interval: only drain makes them written.
        assert await writer.drain(20)
        assert writer.written == 530 and writer.failed == 0
        assert writer._process is None
        assert len(await stored_ids(sqlite_url)) == 530

    asyncio.run(scenario())


def test_the_bound_drops_and_counts_and_an_outage_loses_nothing_within_it(
    postgres_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    upgrade(postgres_url)

    async def scenario() -> None:
        proxy = new_proxy(postgres_url)
        url = await proxied_url(postgres_url, proxy)
        writer = ProcessWriter(fast(url, queue_size=60))
        await writer.start()
        try:
            for _ in range(10):
                writer.submit(make_record())
            await asyncio.wait_for(writer.flush(), 30)
            assert writer.written == 10

            await proxy.off()
            accepted = [writer.submit(make_record()) for _ in range(100)]
            assert accepted == [True] * 60 + [False] * 40
            stats = writer.stats()
            assert stats["dropped"] == 40 and stats["queue_depth"] == 60
            assert await until(lambda: writer.stats()["store_up"] is False, 20)
            await asyncio.sleep(2)
            assert writer.written == 10 and writer.failed == 0

            await proxy.on()
            assert await until(lambda: writer.written == 70, 20), writer.stats()
            assert writer.stats()["store_up"] is True and writer.failed == 0
            assert writer.stats()["retried"] >= 1
            assert writer.submit(make_record())  # room again
        finally:
            await writer.drain(10)
            await proxy.off()
        assert writer.written == 71

    asyncio.run(scenario())
    err = capfd.readouterr().err
    # The writer process logs through the gateway's stderr, in its format.
    assert "WARNING capture.writer: capture database unavailable" in err, err[-2000:]
    assert "capture database back" in err


def test_a_writer_process_that_dies_is_counted_and_replaced(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(postgres_url)

    async def scenario() -> None:
        proxy = new_proxy(postgres_url)
        url = await proxied_url(postgres_url, proxy)
        writer = ProcessWriter(fast(url))
        await writer.start()
        try:
            await proxy.off()
            held = [make_record() for _ in range(25)]
            for record in held:
                writer.submit(record)
            assert await until(lambda: writer.stats()["store_up"] is False, 20)
            first = child_of(writer)
            first.kill()
            assert await until(lambda: writer.lost == 25, 10), writer.stats()
            stats = writer.stats()
            assert stats["failed"] == 25 and stats["queue_depth"] == 0
            assert not writer.is_pending(held[0].id)

            # Submitted while no writer process runs: they wait for the next one.
            waiting = [make_record() for _ in range(5)]
            for record in waiting:
                assert writer.submit(record)
            await proxy.on()
            assert await until(lambda: writer._process is not None, 10)
            assert child_of(writer).pid != first.pid
            await asyncio.wait_for(writer.flush(), 30)
            assert writer.written == 5 and writer.failed == 25
        finally:
            assert await writer.drain(10)
            await proxy.off()
        assert await stored_ids(url.replace(str(proxy.port), "5432")) == {r.id for r in waiting}

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "capture.writer_process"]
    assert any("exited (code -9) with 25 records not written" in line for line in lines), lines


def test_stop_gives_up_what_is_held(postgres_url: str) -> None:
    upgrade(postgres_url)

    async def scenario() -> None:
        proxy = new_proxy(postgres_url)
        url = await proxied_url(postgres_url, proxy)
        writer = ProcessWriter(fast(url))
        await writer.start()
        await proxy.off()
        for _ in range(12):
            writer.submit(make_record())
        assert await until(lambda: writer.stats()["store_up"] is False, 20)
        await writer.stop()
        assert writer.failed == 12 and writer.written == 0 and writer.queue_depth == 0
        assert writer._process is None
        assert not writer.submit(make_record())

    asyncio.run(scenario())


def test_an_orphaned_writer_ignores_signals_and_writes_what_it_holds(sqlite_url: str) -> None:
    upgrade(sqlite_url)

    async def scenario() -> None:
        settings = fast(sqlite_url, batch_size=1000, flush_interval_ms=60_000)
        writer = ProcessWriter(settings)
        await writer.start()
        records = [make_record() for _ in range(40)]
        for record in records:
            writer.submit(record)
        # The writer process reports its queue within its report interval.
        assert await until(lambda: writer._child_stats.get("queue_depth") == 40, 10)
        child = child_of(writer)
        # A Ctrl-C or a SIGTERM to the process group: the gateway drains it, it does not quit.
        child.send_signal(signal.SIGINT)
        child.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        # The gateway dies: its end of the pipe closes without a drain.
        process = writer._process
        assert process is not None and process.stdin is not None
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert await stored_ids(sqlite_url) == {record.id for record in records}

    asyncio.run(scenario())


def test_a_record_that_cannot_be_sent_costs_only_itself(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(sqlite_url)

    async def scenario() -> None:
        writer = ProcessWriter(fast(sqlite_url))
        await writer.start()
        good = [make_record() for _ in range(4)]
        bad = make_record(request_body=memoryview(b"{}"))  # pickle refuses a memoryview
        for record in (good[0], good[1], bad, good[2], good[3]):
            assert writer.submit(record)
        await asyncio.wait_for(writer.flush(), 30)
        stats = writer.stats()
        assert stats["written"] == 4 and stats["failed"] == 1 and stats["queue_depth"] == 0
        assert not any(writer.is_pending(r.id) for r in (*good, bad))
        assert await writer.drain(10)  # nothing more given up
        assert await stored_ids(sqlite_url) == {record.id for record in good}

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "capture.writer_process"]
    assert any("cannot be sent" in line for line in lines), lines


@pytest.mark.parametrize(("priority", "nice"), [("low", 10), ("normal", 0)])
def test_the_writer_priority_can_be_raised(sqlite_url: str, priority: str, nice: int) -> None:
    upgrade(sqlite_url)

    async def scenario() -> None:
        writer = ProcessWriter(fast(sqlite_url, writer_priority=priority))
        await writer.start()
        child = child_of(writer)
        own = psutil.Process().nice()
        assert await until(lambda: child.nice() == min(19, own + nice), 10)
        assert os.sched_getscheduler(child.pid) == os.SCHED_OTHER
        assert await writer.drain(10)

    asyncio.run(scenario())


def test_a_writer_that_does_not_read_holds_little_in_the_gateway(sqlite_url: str) -> None:
    """A writer starved of CPU (here: stopped) reads nothing: the gateway holds what it has not
    read to MAX_UNREAD_BYTES, drops and counts beyond, and everything it kept is stored once
    the writer runs again."""
    upgrade(sqlite_url)

    def body(n: int) -> bytes:  # each its own (a frame pickles a shared object once)
        text = b"x" * (256 << 10) + str(n).encode()
        return b'{"messages": [{"role": "user", "content": "' + text + b'"}]}'

    async def scenario() -> None:
        writer = ProcessWriter(fast(sqlite_url))
        await writer.start()
        await asyncio.wait_for(writer.flush(), 30)  # started and reading
        child = child_of(writer)
        child.suspend()
        accepted: list[str] = []
        try:
            for round_ in range(16):
                for n in range(4):
                    record = make_record(request_body=body(round_ * 4 + n))
                    if writer.submit(record):
                        accepted.append(record.id)
                await asyncio.sleep(0.03)  # sent every 10 ms
            stdin = writer._stdin
            assert stdin is not None
            held = stdin.transport.get_write_buffer_size()
            assert held <= MAX_UNREAD_BYTES + 5 * len(body(0)), held
            stats = writer.stats()
            assert stats["dropped"] > 0 and len(accepted) + stats["dropped"] == 64, (held, stats)
            assert stats["queue_depth"] == len(accepted) < 64
        finally:
            child.resume()
        await asyncio.wait_for(writer.flush(), 60)
        assert writer.written == len(accepted) and writer.failed == 0
        assert await writer.drain(10)
        assert await stored_ids(sqlite_url) == set(accepted)

    asyncio.run(scenario())
