"""The writer through database trouble, against a real PostgreSQL behind a TCP proxy of the
test's own: it resumes within about a second of the database's return however long it was
away, and a database that swallows packets is seen, logged and waited out like one that is
down. ``store_up`` (the ``gateway_capture_store_up`` gauge) follows."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy.engine import make_url

from capture.config import CaptureSettings
from capture.migrate import upgrade
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.factories import make_record
from tests.capture.tcp_proxy import TcpProxy
from tests.capture_support import until

OUTAGE_S = 8.0
"""Long enough that a backoff doubling from 50 ms would sleep for several seconds more."""
RESUME_S = 3.0
"""The probe interval is 0.5 s; the rest is slack for a loaded machine."""


def writer_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "capture.writer"]


async def proxied_store(
    postgres_url: str, proxy: TcpProxy, timeout_s: float | None = None
) -> Store:
    """A store reaching the database through ``proxy``; ``timeout_s``: its connect and
    statement timeouts (else the defaults: 5 s to connect, statements unbounded)."""
    target = make_url(postgres_url)
    await proxy.on()
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    if timeout_s is None:
        return await Store.connect(url)
    return await Store.connect(url, connect_timeout_s=timeout_s, statement_timeout_s=timeout_s)


def new_proxy(postgres_url: str) -> TcpProxy:
    target = make_url(postgres_url)
    return TcpProxy(target.host or "127.0.0.1", target.port or 5432)


def test_the_writer_resumes_within_a_second_of_the_database_coming_back(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="capture")
    upgrade(postgres_url)

    async def scenario() -> None:
        proxy = new_proxy(postgres_url)
        store = await proxied_store(postgres_url, proxy)
        writer = CaptureWriter(store, CaptureSettings(batch_size=50, flush_interval_ms=20))
        await writer.start()
        try:
            for _ in range(10):
                writer.submit(make_record())
            await asyncio.wait_for(writer.flush(), 20)
            assert writer.written == 10 and writer.store_up

            await proxy.off()
            for _ in range(40):
                assert writer.submit(make_record())
            assert await until(lambda: not writer.store_up, 10)
            assert writer.stats()["store_up"] is False
            await asyncio.sleep(OUTAGE_S)
            assert writer.written == 10
            # Probes, not batch after batch: the batch was tried again only when a probe answered.
            assert writer.retried == 1

            await proxy.on()
            back = time.monotonic()
            assert await until(lambda: writer.written == 50, 20)
            took = time.monotonic() - back
            assert took < RESUME_S, f"the writer resumed {took:.1f} s after the database"
            assert writer.store_up and writer.failed == 0 and writer.retried <= 2
        finally:
            await writer.drain(5)
            await store.close()
            await proxy.off()
        messages = writer_messages(caplog)
        assert any("capture database unavailable" in m for m in messages), messages
        assert any("capture database back" in m for m in messages), messages

    asyncio.run(scenario())


def test_a_stalled_database_is_seen_logged_and_waited_out(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="capture")
    upgrade(postgres_url)

    async def scenario() -> None:
        proxy = new_proxy(postgres_url)
        store = await proxied_store(postgres_url, proxy, timeout_s=1.0)
        settings = CaptureSettings(batch_size=50, flush_interval_ms=20)
        writer = CaptureWriter(store, settings)
        await writer.start()
        try:
            for _ in range(10):
                writer.submit(make_record())
            await asyncio.wait_for(writer.flush(), 20)
            assert writer.written == 10

            await proxy.stall()  # the pooled connection stays open, and nothing comes back
            for _ in range(20):
                assert writer.submit(make_record())
            # Statement (1 s) then reconnect (1 s) timeouts; the rest is slack.
            assert await until(lambda: not writer.store_up, 15), writer_messages(caplog)
            unavailable = [m for m in writer_messages(caplog) if "unavailable" in m]
            assert len(unavailable) == 1 and "TimeoutError" in unavailable[0], unavailable
            assert writer.written == 10

            await proxy.on()  # the network is back (the connections it swallowed are gone)
            assert await until(lambda: writer.written == 30, 20), writer_messages(caplog)
            assert writer.store_up and writer.failed == 0
        finally:
            await writer.drain(5)
            await store.close()
            await proxy.off()

    asyncio.run(scenario())
