"""Sustained capture: calls at a fixed rate to a capture-on gateway, every answer a row.

An open-loop asyncio client sends call i at start + i/rate (plain and streamed alternating),
whether or not earlier calls are answered. Once the capture queue is empty and the counters
still, the written/dropped/retried counters of /metrics and the rows in the store are read;
the figures are the differences over the run. bench/features.py runs it on (b) and (c).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from bench import client, procs
from bench.features_configs import HEADERS, ROUTE, ConfigSpec, chat_body, count_rows
from bench.features_report import SustainResult
from bench.prometheus import capture_counters, scrape
from bench.stats import summarize


@dataclass
class Paced:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0
    """From the first call's scheduled time to the last call's sending."""
    max_lag_ms: float = 0.0
    latency_ms: list[float] = field(default_factory=list)


async def paced(url: str, rate: float, seconds: float) -> Paced:
    """Open loop: call i is sent at start + i/rate, whether or not earlier ones are answered."""
    total = max(1, int(rate * seconds))
    payloads = (chat_body(ROUTE, False), chat_body(ROUTE, False, stream=True))
    out = Paced()
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512), timeout=client.TIMEOUT
    )

    async def one(index: int) -> None:
        started = time.perf_counter()
        try:
            async with session.post(
                f"{url}/v1/chat/completions", data=payloads[index % 2], headers=HEADERS
            ) as response:
                await response.read()
                if response.status == 200:
                    out.answered += 1
                    out.latency_ms.append((time.perf_counter() - started) * 1000.0)
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        out.failed += 1

    tasks: list[asyncio.Task[None]] = []
    try:
        start = loop.time()
        last_sent = start
        while out.sent < total:
            now = loop.time()
            due = min(total, int((now - start) * rate) + 1)
            while out.sent < due:
                lag = now - (start + out.sent / rate)
                out.max_lag_ms = max(out.max_lag_ms, lag * 1000.0)
                tasks.append(loop.create_task(one(out.sent)))
                out.sent += 1
            last_sent = now
            await asyncio.sleep(max(0.0, start + out.sent / rate - loop.time()))
        out.seconds = last_sent - start
        await asyncio.gather(*tasks)
    finally:
        await session.close()
    return out


def wait_drained(
    url: str, expected: float, seconds: float = 60.0
) -> tuple[dict[str, float], float]:
    """Scrape until the capture queue is empty, at least ``expected`` records are accounted
    for (written + dropped + failed) and the counters did not move between two scrapes."""
    started = time.monotonic()
    previous: dict[str, float] | None = None
    while True:
        counters = capture_counters(scrape(url))
        done = counters["written"] + counters["dropped"] + counters["failed"]
        settled = counters["queue_depth"] == 0 and done >= expected
        if settled and previous == counters:
            return counters, time.monotonic() - started
        if time.monotonic() - started > seconds:
            return counters, time.monotonic() - started
        previous = counters
        time.sleep(0.5)


def sustain(
    config: ConfigSpec, service: procs.Service, database_url: str, rate: float, seconds: float
) -> SustainResult:
    store = "SQLite" if config.capture == "sqlite" else "PostgreSQL"
    result = SustainResult(store, rate, seconds)
    before, _ = wait_drained(service.url, 0.0)
    rows_before = client.run_async(lambda: count_rows(database_url))
    accounted = before["written"] + before["dropped"] + before["failed"]
    outcome = client.run_async(lambda: paced(service.url, rate, seconds))
    after, drain = wait_drained(service.url, accounted + outcome.answered)
    rows_after = client.run_async(lambda: count_rows(database_url))
    result.sent, result.answered, result.failed = outcome.sent, outcome.answered, outcome.failed
    result.achieved_rate = (outcome.sent - 1) / outcome.seconds if outcome.seconds > 0 else 0.0
    result.max_lag_ms = outcome.max_lag_ms
    result.latency_ms = summarize(outcome.latency_ms)
    result.written = int(after["written"] - before["written"])
    result.dropped = int(after["dropped"] - before["dropped"])
    result.retried = int(after["retried"] - before["retried"])
    result.write_failed = int(after["failed"] - before["failed"])
    result.rows = rows_after - rows_before
    result.drain_s = drain
    return result
