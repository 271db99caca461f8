"""How long a scrape of GET /metrics takes with 50 routes x 3 variants, one worker and several.

Usage::

    python -m bench.metrics_scrape                       # 50 x 3, 200 scrapes, 1 and 2 workers
    python -m bench.metrics_scrape --routes 10 --scrapes 50 --workers 1
    python -m bench.metrics_scrape --json bench/results/metrics_scrape.json

Method. The simulated upstream (zero latency) and ``gateway serve --workers N`` run on loopback.
The configuration has ``--routes`` routes of ``--variants`` variants each: the first variant is
``gpt-4o`` (shared by every route, as a teacher would be), the others a fine-tuned model of
their own (``ft:gpt-4o-mini:acme:r<route>v<variant>:id``), retries off and no fallbacks so that
a failure is passed through. Traffic comes first, so that every label set a busy gateway would
export has a value: for every route and variant (forced with ``x-gateway-variant``), a plain
call, a streamed call and a call the simulator fails with 500; every route also sends one
plain call unforced. With several workers, calls on new connections spread over the workers
(kept up until each has answered some), so the scrape merges every worker's files. Then
``--scrapes`` scrapes of /metrics are timed one after the other on one keep-alive connection,
as Prometheus scrapes (client wall time: request sent to the last byte read), after 10 not
timed. Reported: p50, p99 and max in ms, the body's size in bytes and its number of samples.

``--no-created`` runs the gateway without prometheus-client's ``*_created`` series (one per
counter and histogram series, single-process mode only): fewer samples to render.

Target (issue 6): a scrape under 20 ms, read on the p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil

from bench import procs
from bench.stats import summarize

KEY = "sk-bench-metrics"
TARGET_MS = 20.0
WARMUP_SCRAPES = 10
CREATED_ENV = "PROMETHEUS_DISABLE_CREATED_SERIES"


def config(upstream_port: int, port: int, routes: int, variants: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for r in range(routes):
        members: dict[str, Any] = {"v0": {"provider": "sim", "model": "gpt-4o", "weight": 50}}
        for v in range(1, variants):
            members[f"v{v}"] = {
                "provider": "sim",
                "model": f"ft:gpt-4o-mini:acme:r{r}v{v}:id",
                "weight": 50 // variants,
            }
        table[f"route-{r:02d}"] = {"variants": members, "retry": {"attempts": 1}}
    return {
        "server": {"host": "127.0.0.1", "port": port, "access_log": False},
        "auth": {"keys": [{"name": "bench", "key": KEY, "allow_variant_override": True}]},
        "providers": {"sim": {"base_url": f"http://127.0.0.1:{upstream_port}/v1"}},
        "routes": table,
        "capture": {"enabled": False},
    }


def _body(route: str, stream: bool) -> bytes:
    data: dict[str, Any] = {
        "model": route,
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
        "max_tokens": 8,
    }
    if stream:
        data["stream"] = True
    return json.dumps(data).encode()


def calls(routes: int, variants: int) -> list[tuple[bytes, dict[str, str]]]:
    """Every call of the traffic phase: a body and its extra headers."""
    out: list[tuple[bytes, dict[str, str]]] = []
    for r in range(routes):
        route = f"route-{r:02d}"
        out.append((_body(route, False), {}))
        for v in range(variants):
            forced = {"x-gateway-variant": f"v{v}"}
            out.append((_body(route, False), forced))
            out.append((_body(route, True), forced))
            out.append((_body(route, False), {**forced, "x-sim-fault": "500"}))
    return out


async def send(url: str, batch: list[tuple[bytes, dict[str, str]]], concurrency: int) -> int:
    """Send ``batch`` on new connections, ``concurrency`` at a time; the number of surprises
    (a status other than 200, or 500 for an injected fault)."""
    pending = list(reversed(batch))
    wrong = 0
    base = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal wrong
            while pending:
                body, headers = pending.pop()
                expected = 500 if "x-sim-fault" in headers else 200
                async with session.post(
                    f"{url}/v1/chat/completions", data=body, headers={**base, **headers}
                ) as response:
                    await response.read()
                    wrong += response.status != expected

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return wrong


def worker_pids(service: procs.Service) -> list[int]:
    supervisor = psutil.Process(service.process.pid)
    return [
        child.pid
        for child in supervisor.children(recursive=True)
        if any("spawn_main" in part for part in child.cmdline())
    ]


def all_workers_served(service: procs.Service, workers: int) -> bool:
    if workers == 1:
        return True
    pids = worker_pids(service)
    if len(pids) < workers:
        return False
    directory = Path(psutil.Process(pids[0]).environ()["PROMETHEUS_MULTIPROC_DIR"])
    return all((directory / f"counter_{pid}.db").exists() for pid in pids)


@dataclass
class Result:
    workers: int
    routes: int
    variants: int
    calls: int
    scrapes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    bytes: int
    samples: int
    met: bool


def run_one(
    workdir: Path, upstream_port: int, routes: int, variants: int, workers: int, scrapes: int
) -> Result:
    port = procs.free_port()
    path = procs.write_yaml(
        workdir / f"gateway-{workers}.yaml", config(upstream_port, port, routes, variants)
    )
    argv = procs.serve_command(path, port, workers)
    service = procs.spawn(f"gateway-{workers}w", argv, port, workdir)
    try:
        procs.wait_until(service, urllib.request.Request(f"{service.url}/readyz"), 120.0)
        traffic = calls(routes, variants)
        sent = 0
        deadline = time.monotonic() + 120
        while True:
            wrong = asyncio.run(send(service.url, traffic, concurrency=16))
            if wrong:
                raise RuntimeError(f"{wrong} call(s) were not answered as expected")
            sent += len(traffic)
            if all_workers_served(service, workers) or time.monotonic() > deadline:
                break
        print(f"  {workers} worker(s): {sent} calls sent", file=sys.stderr)
        # Metrics are updated after each answer went out: let the last ones land.
        time.sleep(0.5)
        times: list[float] = []
        size = 0
        text = ""
        with httpx.Client(base_url=service.url, timeout=30) as client:
            for n in range(WARMUP_SCRAPES + scrapes):
                started = time.perf_counter()
                response = client.get("/metrics")
                body = response.content
                elapsed = (time.perf_counter() - started) * 1000.0
                if response.status_code != 200:
                    raise RuntimeError(f"/metrics answered {response.status_code}")
                if n >= WARMUP_SCRAPES:
                    times.append(elapsed)
                size = len(body)
                text = response.text
        samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        stats = summarize(times)
        return Result(
            workers=workers,
            routes=routes,
            variants=variants,
            calls=sent,
            scrapes=scrapes,
            p50_ms=stats["p50"],
            p99_ms=stats["p99"],
            max_ms=round(max(times), 3),
            mean_ms=stats["mean"],
            bytes=size,
            samples=samples,
            met=stats["p99"] < TARGET_MS,
        )
    finally:
        service.stop()


def render(results: list[Result]) -> str:
    lines = [
        "| workers | routes x variants | calls sent | scrapes | p50 ms | p99 ms | max ms "
        "| size bytes | samples | p99 < 20 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.workers} | {r.routes} x {r.variants} | {r.calls} | {r.scrapes} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.2f} | {r.bytes:,} | {r.samples:,} "
            f"| {'yes' if r.met else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-created",
        action="store_true",
        help="run the gateway with PROMETHEUS_DISABLE_CREATED_SERIES=True (no *_created series)",
    )
    args = parser.parse_args(argv)
    if args.no_created:
        os.environ[CREATED_ENV] = "True"  # inherited by the gateway processes
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        workdir = Path(tmp)
        simulator = procs.start_simulator(workdir, None)
        try:
            for workers in args.workers:
                results.append(
                    run_one(
                        workdir, simulator.port, args.routes, args.variants, workers, args.scrapes
                    )
                )
        finally:
            simulator.stop()
    print(render(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
