"""The benchmark's own asyncio client (aiohttp on uvloop), for what wrk cannot measure.

wrk times whole responses; this client times a stream's first body chunk (TTFB), reads the
gateway's ``x-gateway-overhead-ms`` header, checks that answers are well formed, and sends an
exact number of calls for the memory measurement. Direct and gateway calls alternate one by one,
so drift in the machine's load affects both alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import uvloop

from bench.procs import GATEWAY_KEY, ROUTE, UPSTREAM_MODEL

T = TypeVar("T")
TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    model: str


def targets(direct_url: str, gateway_url: str) -> tuple[Target, Target]:
    return (
        Target("direct", f"{direct_url}/v1/chat/completions", UPSTREAM_MODEL),
        Target("gateway", f"{gateway_url}/v1/chat/completions", ROUTE),
    )


def body(model: str, stream: bool) -> bytes:
    data: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
            {"role": "user", "content": "What does a gateway in front of a model API do?"},
        ],
        "max_tokens": 16,
    }
    if stream:
        data["stream"] = True
    return json.dumps(data).encode()


HEADERS = {
    "authorization": f"Bearer {GATEWAY_KEY}",
    "content-type": "application/json",
    "x-sim-ttft-ms": "0",
    "x-sim-token-ms": "0",
}


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh uvloop loop (the client's own overhead kept small)."""

    async def main() -> T:
        return await factory()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=TIMEOUT)


class BadAnswer(Exception):
    """A call was not answered the way the benchmark expects."""


async def _check_one(session: aiohttp.ClientSession, target: Target, stream: bool) -> None:
    async with session.post(target.url, data=body(target.model, stream), headers=HEADERS) as r:
        raw = await r.read()
        where = f"{target.name} {'stream' if stream else 'non-stream'} call"
        if r.status != 200:
            raise BadAnswer(f"{where}: status {r.status}: {raw[:300]!r}")
        if target.name == "gateway":
            upstream = r.headers.get("x-gateway-upstream-model")
            if upstream != UPSTREAM_MODEL:
                raise BadAnswer(f"{where}: x-gateway-upstream-model is {upstream!r}")
        if stream:
            if not raw.rstrip().endswith(b"data: [DONE]"):
                raise BadAnswer(f"{where}: the stream did not end with [DONE]: {raw[-200:]!r}")
        elif json.loads(raw).get("model") != UPSTREAM_MODEL:
            raise BadAnswer(f"{where}: the answer's model is not {UPSTREAM_MODEL}: {raw[:300]!r}")


async def check(direct_url: str, gateway_url: str) -> None:
    """One call of each kind to each target; BadAnswer says what is wrong."""
    async with _session(1) as session:
        for target in targets(direct_url, gateway_url):
            for stream in (False, True):
                await _check_one(session, target, stream)


@dataclass
class Samples:
    """Per target: TTFB of streamed calls, total time of plain calls, in milliseconds."""

    ttfb_ms: dict[str, list[float]] = field(default_factory=lambda: {"direct": [], "gateway": []})
    plain_ms: dict[str, list[float]] = field(default_factory=lambda: {"direct": [], "gateway": []})
    reported_overhead_ms: list[float] = field(default_factory=list)
    """The gateway's own x-gateway-overhead-ms on its plain calls."""
    errors: dict[str, int] = field(default_factory=lambda: {"direct": 0, "gateway": 0})


async def _ttfb(session: aiohttp.ClientSession, target: Target, payload: bytes) -> float | None:
    started = time.perf_counter()
    async with session.post(target.url, data=payload, headers=HEADERS) as response:
        tail = await response.content.readany()
        first = time.perf_counter()
        async for chunk in response.content.iter_any():
            tail = (tail + chunk)[-32:]
        if response.status != 200 or b"[DONE]" not in tail:
            return None
    return (first - started) * 1000.0


async def _plain(
    session: aiohttp.ClientSession, target: Target, payload: bytes
) -> tuple[float, str | None] | None:
    started = time.perf_counter()
    async with session.post(target.url, data=payload, headers=HEADERS) as response:
        await response.read()
        elapsed = (time.perf_counter() - started) * 1000.0
        if response.status != 200:
            return None
        return elapsed, response.headers.get("x-gateway-overhead-ms")


async def sequential(
    direct_url: str, gateway_url: str, calls: int, seconds: float, stream: bool, samples: Samples
) -> None:
    """Up to ``calls`` calls per target, one at a time, alternating targets, within ``seconds``."""
    pair = targets(direct_url, gateway_url)
    payloads = {target.name: body(target.model, stream) for target in pair}
    sessions = {target.name: _session(1) for target in pair}
    try:
        deadline = time.monotonic() + seconds
        for _ in range(calls):
            if time.monotonic() > deadline:
                break
            for target in pair:
                payload, session = payloads[target.name], sessions[target.name]
                try:
                    if stream:
                        ttfb = await _ttfb(session, target, payload)
                        if ttfb is not None:
                            samples.ttfb_ms[target.name].append(ttfb)
                            continue
                    else:
                        plain = await _plain(session, target, payload)
                        if plain is not None:
                            samples.plain_ms[target.name].append(plain[0])
                            if plain[1] is not None:
                                samples.reported_overhead_ms.append(float(plain[1]))
                            continue
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass
                samples.errors[target.name] += 1
    finally:
        for session in sessions.values():
            await session.close()


async def drive(gateway_url: str, calls: int, concurrency: int) -> int:
    """Send exactly ``calls`` calls (streamed and plain alternately); the number that failed."""
    target = targets(gateway_url, gateway_url)[1]
    payloads = (body(target.model, False), body(target.model, True))
    remaining = calls
    failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, failed
        while remaining > 0:
            remaining -= 1
            try:
                async with session.post(
                    target.url, data=payloads[remaining % 2], headers=HEADERS
                ) as response:
                    await response.read()
                    if response.status != 200:
                        failed += 1
            except (aiohttp.ClientError, TimeoutError):
                failed += 1

    async with _session(concurrency) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed
