"""Start time and memory of the gateway with everything on (issue 16, item 4).

Usage (on a shared machine, one measurement at a time)::

    flock /tmp/bench.lock .venv/bin/python -m bench.start_memory            # ~1 minute
    flock /tmp/bench.lock .venv/bin/python -m bench.start_memory --starts 3 --calls 1000

Everything on: a route of two sticky variants (50/50 by the call's ``user``), capture to
PostgreSQL (a scratch database created on ``--postgres-url``'s server, migrated once with
``gateway db upgrade``, dropped at the end), a key with RPM/TPM limits and a daily budget kept
in Redis (a prefix of the run's own, its keys deleted at the end), metrics (always on; scraped
once after the calls). One worker (``gateway serve --workers 1``), the simulated upstream as its
own process at zero latency.

For each of ``--starts`` starts of a fresh gateway process:

- start: seconds from the spawn to the first answered chat call (polled every 10 ms), and the
  CPU seconds the gateway had used by then;
- RSS idle: the process's resident memory 1 s after that first answer;
- RSS peak: the highest resident memory sampled every 10 ms while ``--calls`` calls are sent at
  ``--concurrency`` (every second call streamed), then /metrics is read; and the kernel's
  high-water mark (``VmHWM``), which also counts the start.

The medians over the starts are printed, with every start's figures. The configurations and
helpers are bench/procs.py's and bench/features_configs.py's.

Bytecode: an installed gateway (the image's ``pip install`` of the wheel) starts from compiled
bytecode; a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as this machine's shell and the
image's environment set) would compile the project's ~100 modules from source at every start
(~0.2-0.3 s here). So the gateways run with their bytecode cached under the run's temporary
directory (``PYTHONPYCACHEPREFIX``) after one start that is not counted; ``--as-is`` runs them
in the caller's environment instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import client, features_configs, procs

MIB = 1024 * 1024
SAMPLE_S = 0.01


@dataclass(frozen=True)
class Start:
    seconds: float
    cpu_s: float
    """The gateway's user+system CPU seconds at its first answer (less moved by the load of
    the machine's other processes than ``seconds``)."""
    idle_mib: float
    peak_mib: float
    hwm_mib: float
    failed: int


def everything_on(upstream_port: int, port: int, database_url: str, redis: dict[str, Any]) -> Any:
    """The gateway configuration: two sticky variants, capture to PostgreSQL, limits in Redis."""
    data = procs.gateway_config(upstream_port, port)
    data["auth"] = {
        "keys": [{"name": "bench", "key": procs.GATEWAY_KEY, **features_configs.LIMITS}]
    }
    data["routes"] = {
        procs.ROUTE: {
            "sticky": "user",
            "variants": {
                "a": {"provider": "sim", "model": features_configs.AB_MODELS["a"], "weight": 50},
                "b": {"provider": "sim", "model": features_configs.AB_MODELS["b"], "weight": 50},
            },
        }
    }
    data["capture"] = {"enabled": True, "database_url": database_url}
    data["redis"] = redis
    return data


def _body(index: int) -> bytes:
    payload: dict[str, Any] = {**procs.CHAT_BODY, "user": f"user-{index % 97}"}
    if index % 2:
        payload["stream"] = True
    return json.dumps(payload).encode()


async def drive(url: str, calls: int, concurrency: int) -> int:
    """``calls`` calls (every second one streamed) at ``concurrency``; how many failed."""
    bodies = [_body(i) for i in range(194)]
    headers = {"authorization": f"Bearer {procs.GATEWAY_KEY}", "content-type": "application/json"}
    remaining, failed = calls, 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, failed
        while remaining > 0:
            remaining -= 1
            try:
                async with session.post(
                    f"{url}/v1/chat/completions", data=bodies[remaining % 194], headers=headers
                ) as response:
                    await response.read()
                    failed += response.status != 200
            except (aiohttp.ClientError, TimeoutError):
                failed += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=client.TIMEOUT) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def high_water_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The highest RSS of a service, sampled every ``SAMPLE_S`` in a thread."""

    def __init__(self, service: procs.Service) -> None:
        self.service = service
        self.peak = service.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak, self.service.rss_bytes())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def gateway_env(workdir: Path, as_is: bool) -> dict[str, str] | None:
    """The gateways' environment: bytecode cached under ``workdir`` unless ``as_is``."""
    if as_is:
        return None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def spawn_gateway(
    workdir: Path, name: str, config: Path, port: int, env: dict[str, str] | None
) -> tuple[procs.Service, float]:
    """``gateway serve`` (one worker); the seconds from the spawn to its first chat answer."""
    argv = [*procs.gateway_command(), "serve", "--config", str(config), "--port", str(port)]
    argv += ["--workers", "1", "--log-level", "warning", "--simulator", "off"]
    service = procs.spawn(name, argv, port, workdir, cwd=workdir, env=env)
    try:
        return service, procs.wait_until(service, procs.chat_request(service.url), 60.0)
    except BaseException:
        service.stop()
        raise


def one_start(
    workdir: Path,
    index: int,
    config: Path,
    port: int,
    args: argparse.Namespace,
    env: dict[str, str] | None,
) -> Start:
    service, seconds = spawn_gateway(workdir, f"gateway-{index}", config, port, env)
    cpu_s = service.cpu_seconds()
    try:
        time.sleep(1.0)
        idle = service.rss_bytes()
        with Sampler(service) as sampler:
            failed = client.run_async(lambda: drive(service.url, args.calls, args.concurrency))
            with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as response:
                response.read()
        return Start(
            seconds=seconds,
            cpu_s=cpu_s,
            idle_mib=idle / MIB,
            peak_mib=max(sampler.peak, idle) / MIB,
            hwm_mib=high_water_mib(service.process.pid),
            failed=failed,
        )
    finally:
        service.stop()


def run(args: argparse.Namespace) -> list[Start]:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="start-memory-")))
        database_url, why = stack.enter_context(
            features_configs.postgres_scratch(args.postgres_url, progress)
        )
        if database_url is None:
            raise SystemExit(f"start_memory: {why}")
        prefix, why = stack.enter_context(features_configs.redis_prefix(args.redis_url, progress))
        if why is not None:
            raise SystemExit(f"start_memory: {why}")
        simulator = procs.start_simulator(workdir, None)
        stack.callback(simulator.stop)
        env = gateway_env(workdir, args.as_is)
        redis = {"url": args.redis_url, "prefix": prefix}

        def configured() -> tuple[Path, int]:
            port = procs.free_port()
            data = everything_on(simulator.port, port, database_url, redis)
            return procs.write_yaml(workdir / "gateway.yaml", data), port

        config, port = configured()
        problem = features_configs.db_upgrade(config)
        if problem is not None:
            raise SystemExit(f"start_memory: {problem}")
        if env is not None:
            warm, seconds = spawn_gateway(workdir, "gateway-bytecode", config, port, env)
            warm.stop()
            progress(f"start writing the bytecode (not counted): {seconds:.3f} s")
        starts: list[Start] = []
        for index in range(args.starts):
            config, port = configured()
            start = one_start(workdir, index, config, port, args, env)
            progress(
                f"start {index + 1}: {start.seconds:.3f} s ({start.cpu_s:.2f} s CPU), "
                f"RSS idle {start.idle_mib:.1f} MiB, "
                f"peak {start.peak_mib:.1f} MiB (VmHWM {start.hwm_mib:.1f}), "
                f"{start.failed} failed"
            )
            starts.append(start)
        return starts


def report(starts: list[Start], args: argparse.Namespace) -> str:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    return (
        f"everything on{' (as is)' if args.as_is else ''}, {args.calls} calls at "
        f"c={args.concurrency}, median of {len(starts)}: "
        f"start {median([s.seconds for s in starts]):.3f} s "
        f"({median([s.cpu_s for s in starts]):.2f} s CPU), "
        f"RSS idle {median([s.idle_mib for s in starts]):.1f} MiB, "
        f"peak {median([s.peak_mib for s in starts]):.1f} MiB, "
        f"VmHWM {median([s.hwm_mib for s in starts]):.1f} MiB, "
        f"failed {sum(s.failed for s in starts)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.start_memory", description=__doc__)
    parser.add_argument("--starts", type=int, default=5, help="gateway starts (5)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per start (2,000)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight (16)")
    parser.add_argument("--postgres-url", default=features_configs.DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=features_configs.DEFAULT_REDIS_URL)
    parser.add_argument(
        "--as-is",
        action="store_true",
        help="run the gateways in this environment (no bytecode cache of the run's own)",
    )
    args = parser.parse_args(argv)
    print(report(run(args), args))


if __name__ == "__main__":
    main()
