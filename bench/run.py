"""``make bench``: what the gateway adds to a call, measured against the upstream it fronts.

Usage::

    make bench                                  # ~17 minutes
    make bench BENCH_ARGS=--quick               # ~1 minute, the same report with fewer samples
    .venv/bin/python -m bench.run --duration 5 --only 'plain/c1/*,ttfb'
    .venv/bin/python -m bench.run --only dialects --dialects-baseline /tmp/bench-base

Method. Everything runs on loopback, in processes this module starts and stops (also on Ctrl-C
or an error): the simulated upstream (``gateway simulate``) with a profile whose latency is zero,
and the gateway (``gateway serve --workers 1``) with key auth on and one route, ``bench-model``,
whose single variant is ``gpt-4o-mini`` on the simulator, so the gateway really parses the body
and rewrites ``model``. Each call sets the simulator's delay itself (``x-sim-ttft-ms`` 0 or 50,
``x-sim-token-ms`` 0), so a call's time is the simulator's and the gateway's work only.

1. Start: the wall time from spawning ``gateway serve`` to its first answered chat call
   (polled with a real chat call), then one call of each kind to both targets to check the
   answers (status, ``[DONE]``, the rewritten model).
2. Memory: the gateway's RSS after startup, after 5,000 and after 50,000 calls (half streamed)
   sent by an asyncio client at concurrency 16; the last two should be within 10%.
3. One call at a time (asyncio client, aiohttp on uvloop): streamed calls timed to their first
   body chunk (TTFB), then plain calls timed to the end, direct and gateway alternating call by
   call; the gateway's own ``x-gateway-overhead-ms`` header is collected on the plain calls.
4. Matrix, with wrk and bench/post.lua: {direct, gateway} x concurrency {1, 10, 50} x upstream
   delay {0, 50 ms} x {plain, stream}. Each run is preceded by a warm-up run of the same load;
   the direct and the gateway run of a cell are back to back (their order alternating from cell
   to cell) so that drift in the machine's load affects both alike. wrk uses one thread: the
   machine's cores are shared by wrk, the simulator and the gateway. The Lua ``done()`` prints
   one JSON line (requests, duration, errors, latency percentiles), so nothing is scraped from
   wrk's text. Overhead is gateway minus direct at the same percentile.
5. Features (bench/features.py; ``--only features``): what capture (SQLite, PostgreSQL), an A/B
   route with a shadow, limits in Redis and cache hits each add at c=1, one gateway process per
   configuration against the same simulator, in interleaved rounds; and capture at a fixed
   500 calls/s, every answered call counted in the store.
6. Dialects (bench/dialects.py; ``--only dialects``): a same-dialect call against the gateway
   of another checkout (``--dialects-baseline PATH``, e.g. a worktree of the commit before the
   dialect work), and OpenAI <-> Anthropic calls, translated and passed through, against the
   same-dialect call, at c=1, plain and streamed, with wrk and an asyncio client for TTFB.
7. Capture size (bench/capture_size.py; ``--only capture-size``): a generated, seeded workload
   written through the capture path into a scratch PostgreSQL database and a SQLite file: bytes
   per call (heap, TOAST, indexes after VACUUM; the SQLite file), against the request and response
   stored whole, the repeated share of the requests, the write rate and the DELETE-based prune.
8. The tail (bench/tail.py; ``--only tail``): each component (capture per store, limits, two
   sticky variants, /metrics scraped) alone and all together, a gateway of its own pinned to one
   core: c=1 overhead p50/p90/p99, TTFB, calls/s at c=10 and c=50, c=50 with a 50 ms upstream,
   RSS, start, CPU per call, and the gateway's loop holds (gateway/looplag.py) and py-spy.

The report (markdown, for the README's "Benchmarks" section) goes to stdout with the issue's
targets marked met or not, and with the JSON to bench/results/latest.{md,json}. Progress goes to
stderr. The exit status is non-zero only when the benchmark could not run, not for a missed
target.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from fnmatch import fnmatchcase
from pathlib import Path
from types import FrameType

from bench import capture_size, client, dialects, features, procs, tail, wrk
from bench.report import Cell, MemoryPoint, Results, machine, render, to_json
from bench.stats import summarize

CONNECTIONS = (1, 10, 50)
DELAYS_MS = (0, 50)
MODES = ("plain", "stream")
RESULTS_DIR = Path(__file__).with_name("results")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="~1 minute: shorter runs, fewer calls")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 10, quick 1)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each wrk run (1)")
    parser.add_argument(
        "--only",
        help="comma-separated globs over the parts to run: the matrix cells "
        "(plain/c1/d0 ... stream/c50/d50), 'ttfb', 'memory', 'features' (or one half: "
        "'features/overhead', 'features/sustain'), 'dialects', 'capture-size' and 'tail'; "
        "e.g. 'plain/c1/*,ttfb'",
    )
    parser.add_argument(
        "--memory-calls",
        help="the two call counts after which the gateway's RSS is sampled "
        "(default 5000,50000; quick 1000,10000)",
    )
    parser.add_argument(
        "--ttfb-seconds",
        type=float,
        help="time budget of the one-at-a-time streamed calls (default 10, quick 2); "
        "plain calls get half of it",
    )
    parser.add_argument("--ttfb-calls", type=int, default=2000, help="most calls per target")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--simulator-command",
        help="start the upstream with this command instead of `gateway simulate` "
        "({port} and {profile} are filled in)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    features.add_arguments(parser)
    dialects.add_arguments(parser)
    capture_size.add_arguments(parser)
    tail.add_arguments(parser)
    args = parser.parse_args(argv)
    features.finish_arguments(args)
    dialects.finish_arguments(args)
    quick = args.quick
    tail.finish_arguments(args, parser)
    args.duration = args.duration or (1 if quick else 10)
    args.warmup = 1 if args.warmup is None else args.warmup
    args.ttfb_seconds = args.ttfb_seconds or (2.0 if quick else 10.0)
    counts = args.memory_calls or ("1000,10000" if quick else "5000,50000")
    try:
        first, second = (int(part) for part in counts.split(","))
    except ValueError:
        parser.error("--memory-calls takes two numbers, e.g. 5000,50000")
    if not 0 < first < second:
        parser.error("--memory-calls: the second count must be larger than the first")
    args.memory_counts = (first, second)
    args.patterns = [p.strip() for p in args.only.split(",")] if args.only else ["*"]
    if args.capture_size_records is None:
        args.capture_size_records = (
            capture_size.QUICK_RECORDS if quick else capture_size.DEFAULT_RECORDS
        )
    if args.capture_size_records < 10:
        parser.error("--capture-size-records: at least 10")
    return args


def _selected(args: argparse.Namespace, name: str) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in args.patterns)


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _command(argv: list[str] | None) -> str:
    words = sys.argv[1:] if argv is None else argv
    if os.environ.get("MAKELEVEL"):
        return "make bench" + (f" BENCH_ARGS={shlex.quote(shlex.join(words))}" if words else "")
    return shlex.join([".venv/bin/python", "-m", "bench.run", *words])


class Bench:
    """One run: the processes, the phases, and what they measured."""

    def __init__(self, args: argparse.Namespace, executable: str, results: Results) -> None:
        self.args = args
        self.wrk = executable
        self.results = results
        self.gateway_calls = 0
        self.services: tuple[procs.Service, ...] = ()

    def memory(self, gateway: procs.Service) -> None:
        first, second = self.args.memory_counts
        for label, count in (("first", first), ("second", second)):
            _progress(f"memory: {count - self.gateway_calls:,} calls to reach {count:,}")
            failed = client.run_async(
                functools.partial(client.drive, gateway.url, count - self.gateway_calls, 16)
            )
            if failed:
                _progress(f"memory: {failed} of the calls failed")
            self.gateway_calls = count
            time.sleep(0.5)
            self.results.memory.append(MemoryPoint(label, count, gateway.rss_bytes()))

    def one_at_a_time(self, direct_url: str, gateway_url: str) -> None:
        samples = client.Samples()
        seconds, calls = self.args.ttfb_seconds, self.args.ttfb_calls
        for stream, budget in ((True, seconds), (False, seconds / 2)):
            _progress(f"one call at a time, {'streamed' if stream else 'plain'}: {budget:.0f} s")
            client.run_async(
                functools.partial(
                    client.sequential, direct_url, gateway_url, calls, budget, stream, samples
                )
            )
        self.gateway_calls += len(samples.ttfb_ms["gateway"]) + len(samples.plain_ms["gateway"])
        self.results.ttfb_ms = {name: summarize(v) for name, v in samples.ttfb_ms.items()}
        self.results.plain_ms = {name: summarize(v) for name, v in samples.plain_ms.items()}
        self.results.reported_overhead_ms = summarize(samples.reported_overhead_ms)
        self.results.client_errors = samples.errors

    def matrix(self, simulator: procs.Service, gateway: procs.Service) -> None:
        self.services = (simulator, gateway)
        direct_url, gateway_url = simulator.url, gateway.url
        cells = [
            Cell(mode, connections, delay)
            for delay in DELAYS_MS
            for connections in CONNECTIONS
            for mode in MODES
        ]
        cells = [cell for cell in cells if _selected(self.args, cell.id)]
        for index, cell in enumerate(cells):
            loads = {
                "direct": wrk.Load(
                    f"{direct_url}/v1/chat/completions", procs.UPSTREAM_MODEL,
                    cell.connections, cell.mode == "stream", cell.delay_ms,
                ),
                "gateway": wrk.Load(
                    f"{gateway_url}/v1/chat/completions", procs.ROUTE,
                    cell.connections, cell.mode == "stream", cell.delay_ms,
                ),
            }  # fmt: skip
            order = ("direct", "gateway") if index % 2 == 0 else ("gateway", "direct")
            for name in order:
                _progress(f"wrk {cell.id} {name} ({index + 1}/{len(cells)})")
                if self.args.warmup > 0:
                    warm = wrk.run(self.wrk, loads[name], self.args.warmup, self.args.threads)
                    self.gateway_calls += warm.requests if name == "gateway" else 0
                before = {service.name: service.cpu_seconds() for service in self.services}
                result = wrk.run(self.wrk, loads[name], self.args.duration, self.args.threads)
                wall = max(result.duration_s, 1e-6)
                cell.cpu[name] = {
                    service.name: (service.cpu_seconds() - before[service.name]) / wall
                    for service in self.services
                }
                if name == "gateway":
                    cell.gateway = result
                    self.gateway_calls += result.requests
                else:
                    cell.direct = result
            self.results.cells.append(cell)

    def execute(self, workdir: Path, services: list[procs.Service]) -> None:
        _progress("starting the simulated upstream")
        simulator = procs.start_simulator(workdir, self.args.simulator_command)
        services.append(simulator)
        _progress(f"simulator on {simulator.url}; starting the gateway")
        gateway, seconds = procs.start_gateway(workdir, simulator.port)
        services.append(gateway)
        self.results.start_seconds = seconds
        self.gateway_calls = 1
        self.results.memory.append(MemoryPoint("startup", 1, gateway.rss_bytes()))
        _progress(f"gateway on {gateway.url}, first answer after {seconds:.2f} s")
        client.run_async(lambda: client.check(simulator.url, gateway.url))
        self.gateway_calls += 2
        if _selected(self.args, "memory"):
            self.memory(gateway)
        if _selected(self.args, "ttfb"):
            self.one_at_a_time(simulator.url, gateway.url)
        self.matrix(simulator, gateway)
        if len(self.results.memory) > 1:
            self.results.memory.append(MemoryPoint("end", self.gateway_calls, gateway.rss_bytes()))
        # What each feature adds (bench/features.py): gateways of its own, the same simulator.
        overhead, sustained = features.parts(lambda name: _selected(self.args, name))
        if overhead or sustained:
            self.results.features = features.run(
                self.args, self.wrk, simulator, workdir, _progress, overhead, sustained
            )
        # What a provider dialect costs (bench/dialects.py): gateways of its own, the same
        # simulator.
        if _selected(self.args, "dialects"):
            self.results.dialects = dialects.run(self.args, self.wrk, simulator, workdir, _progress)
        # What capture stores per call and how fast (bench/capture_size.py): no gateway, the
        # capture path itself into a scratch PostgreSQL database and a SQLite file.
        if _selected(self.args, "capture-size"):
            self.results.capture_size = capture_size.measure(
                self.args.capture_size_records,
                postgres_url=self.args.capture_size_postgres or None,
                progress=_progress,
            )
        # Where the tail comes from (bench/tail.py): each component alone and all together, a
        # gateway of its own for each, pinned to one core; the same simulator.
        if _selected(self.args, "tail"):
            self.results.tail = tail.run(self.args, self.wrk, simulator, workdir, _progress)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Handled as a Ctrl-C: inside an event loop asyncio.Runner turns SIGINT into a cancellation
    # (an exception raised from here could be swallowed by a loop callback), elsewhere Python
    # raises KeyboardInterrupt. Either way the finally block stops the processes.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        executable = wrk.wrk_path()
    except wrk.WrkError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    # Also when started in the background, where the shell ignores SIGINT for us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    results = Results(
        command=_command(argv),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        method={
            "wrk": wrk.wrk_version(executable),
            "threads": args.threads,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "quick": args.quick,
            "only": args.only,
            "load_at_start": round(os.getloadavg()[0], 2),
        },
        start_seconds=0.0,
    )
    bench = Bench(args, executable, results)
    started = time.monotonic()
    services: list[procs.Service] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        try:
            bench.execute(Path(tmp), services)
        except (procs.StartError, wrk.WrkError, client.BadAnswer) as exc:
            print(f"bench: could not run: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            for service in reversed(services):
                service.stop()
    _progress(f"done in {time.monotonic() - started:.0f} s")
    markdown = render(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latest.md").write_text(markdown)
    (args.out_dir / "latest.json").write_text(json.dumps(to_json(results), indent=2) + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
