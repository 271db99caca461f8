"""Where the tail comes from: each component switched on alone, and all together, same run.

Part of ``make bench`` (``--only tail`` runs only this). Usage::

    make bench BENCH_ARGS='--only tail'                  # ~8 minutes
    make bench BENCH_ARGS='--quick --only tail'          # ~3 minutes
    .venv/bin/python -m bench.run --only tail --tail-configs base,everything --tail-calls 200

Beside the core matrix's simulator (zero latency; each call sets its delay by header), one
gateway process per configuration (``gateway serve --workers 1``, key auth on, route
``bench-model`` rewritten to ``gpt-4o-mini``), started and measured one after the other
(bench/tail_report.py lists them): the base (one variant, capture off, no limits, /metrics not
read), capture to SQLite, capture to PostgreSQL (a scratch database, as
bench/features_configs.py makes it), a key with RPM/TPM limits on Redis (a prefix of the run's
own, its keys deleted after), two sticky variants, /metrics scraped every second (the gateway's
metrics are always kept; reading them is what can be switched), and everything on at once.

The gateway is pinned to one core (``taskset``; the last core this process may use), and the
simulator, the load generators and this process to the others, for the tail part only
(bench/cores.py); with a single core nothing is pinned. The stores' servers (PostgreSQL, Redis)
run where the scheduler puts them, unless ``--tail-pin-stores`` moves them to the load's
cores. Per configuration, in order: the start (spawn to the first answered chat call;
``gateway db upgrade`` runs before the spawn), a check of each kind of call, RSS idle;
``--tail-warmup`` seconds of one-at-a-time calls, unmeasured (a key's limits admit from credits
after two busy seconds; before that each call waits for Redis); plain calls one at a time,
direct and gateway alternating (``--tail-calls`` each), with the gateway's own time per call
(its ``x-gateway-overhead-ms``) and its process's scheduler figures over them (schedstat),
then streamed ones for the time to first byte (bench/client.py); wrk at c=10 and c=50
(bench/wrk.py, plain calls, a warm-up before each), the gateway's CPU time over the c=50 run;
c=50 with a 50 ms upstream, direct and gateway back to back; then two windows with the
gateway's loop-lag sampler on (gateway/looplag.py, through ``GATEWAY_LOOPLAG``, SIGUSR1 and
SIGUSR2), so the figures above are measured without it: one-at-a-time calls again, and a c=50
wrk run, during which py-spy samples the everything-on gateway (``--tail-profile``). Last, the
process's peak RSS (VmHWM), and it is stopped. At the end the everything-on configuration runs
once more with ``GATEWAY_LOOPLAG_STEPS`` (``--tail-steps``): the same two windows, every task's
steps timed by coroutine, which names the work that holds the loop.

A store that cannot be reached (PostgreSQL, Redis) makes its configurations "not measured",
with the reason, rather than failing the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import client, cores, features_configs, procs, wrk
from bench.cores import Pinning
from bench.loop_holds import Profile, profile_from_collapsed
from bench.probes import (
    Scraper,
    capture_counts,
    children_peak_rss_bytes,
    lag_window,
    own_rss_bytes,
    peak_rss_bytes,
    scheduler_ns,
)
from bench.stats import summarize
from bench.tail_report import EVERYTHING, SPECS, TailResult, TailResults, TailSpec

LOOPLAG_ENV = "GATEWAY_LOOPLAG"
STEPS_ENV = "GATEWAY_LOOPLAG_STEPS"
"""gateway/looplag.py's variables (not imported: the benchmark does not import the gateway)."""
OWN_PACKAGES = ("gateway", "capture", "router", "dialects", "autopilot")
Progress = Callable[[str], None]


# --- arguments ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tail (bench/tail.py; --only tail)")
    group.add_argument(
        "--tail-calls", type=int, help="one-at-a-time calls per target and kind (2000, quick 500)"
    )
    group.add_argument("--tail-seconds", type=int, help="seconds per wrk run (8, quick 2)")
    group.add_argument(
        "--tail-configs",
        help="comma-separated configurations (default all: "
        + ",".join(s.name for s in SPECS)
        + ")",
    )
    group.add_argument(
        "--tail-capture",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a capture setting over the defaults where capture is on, e.g. writer=loop or "
        "writer_priority=low (YAML values; repeatable)",
    )
    group.add_argument(
        "--tail-warmup",
        type=float,
        default=3.0,
        help="seconds of unmeasured one-at-a-time calls before the measured ones (default 3: "
        "a key's limits admit from credits after two busy seconds)",
    )
    group.add_argument(
        "--tail-pin-stores",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="PostgreSQL's and Redis's servers, where they run on this machine, on the load's "
        "cores, off the gateway's (default off: there their work slows the direct calls too; "
        "bench/cores.py)",
    )
    group.add_argument(
        "--tail-profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py-spy on the everything-on gateway during its c=50 loop-lag run (default on)",
    )
    group.add_argument(
        "--tail-steps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="everything on once more, every task's steps timed by coroutine (default on)",
    )


def finish_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    quick = bool(args.quick)
    if args.tail_calls is None:
        args.tail_calls = 500 if quick else 2000
    if args.tail_seconds is None:
        args.tail_seconds = 2 if quick else 8
    names = [s.name for s in SPECS]
    chosen = [n.strip() for n in args.tail_configs.split(",")] if args.tail_configs else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"--tail-configs: unknown {', '.join(unknown)} (known: {', '.join(names)})")
    args.tail_specs = [s for s in SPECS if s.name in chosen]
    args.tail_capture_settings = {}
    for item in args.tail_capture:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--tail-capture: KEY=VALUE, not {item!r}")
        args.tail_capture_settings[key.strip()] = yaml.safe_load(value)
    if args.tail_calls < 1 or args.tail_seconds < 1 or args.tail_warmup < 0:
        parser.error("--tail-calls and --tail-seconds: at least 1; --tail-warmup: at least 0")


# --- configurations -------------------------------------------------------------------------


def config_for(
    spec: TailSpec,
    upstream_port: int,
    port: int,
    stores: features_configs.Stores,
    capture: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The gateway configuration (the parsed YAML) of one configuration under test; ``capture``:
    settings over the capture's defaults where it is on (``--tail-capture``)."""
    data = procs.gateway_config(upstream_port, port)
    key: dict[str, Any] = {"name": "bench", "key": features_configs.KEY}
    route: dict[str, Any] = {
        "variants": {"only": {"provider": "sim", "model": features_configs.UPSTREAM_MODEL}}
    }
    if spec.ab:
        # Both on the simulator's model, so every answer checks alike; the bench's calls carry
        # no user, so the key is the sticky key and one variant answers them all.
        route = {
            "variants": {
                name: {"provider": "sim", "model": features_configs.UPSTREAM_MODEL, "weight": 50}
                for name in ("a", "b")
            },
            "sticky": "user",
        }
    if spec.capture == "sqlite":
        data["capture"] = {"enabled": True, "database_url": stores.sqlite_url}
    elif spec.capture == "postgres":
        data["capture"] = {"enabled": True, "database_url": stores.postgres_url}
    else:
        data["capture"] = {"enabled": False}
    if spec.capture is not None and capture:
        data["capture"].update(capture)
    if spec.limits:
        key["rpm"], key["tpm"] = features_configs.LIMITS["rpm"], features_configs.LIMITS["tpm"]
        data["redis"] = {"url": stores.redis_url, "prefix": f"{stores.redis_prefix}-{spec.name}"}
    data["auth"] = {"keys": [key]}
    data["routes"] = {features_configs.ROUTE: route}
    return data


def unavailable(spec: TailSpec, stores: features_configs.Stores) -> str | None:
    if spec.capture == "postgres" and stores.postgres_url is None:
        return stores.postgres_reason or "no PostgreSQL"
    if spec.limits and stores.redis_reason is not None:
        return stores.redis_reason
    return None


# --- the gateway under test -----------------------------------------------------------------


def start_gateway(
    spec: TailSpec,
    workdir: Path,
    upstream_port: int,
    stores: features_configs.Stores,
    pinning: Pinning | None,
    steps: bool = False,
    capture: dict[str, Any] | None = None,
) -> tuple[procs.Service, float, Path]:
    """The configuration's gateway, started; the seconds to its first answer; its lag file."""
    port = procs.free_port()
    path = procs.write_yaml(
        workdir / f"gateway-tail-{spec.name}.yaml",
        config_for(spec, upstream_port, port, stores, capture),
    )
    if spec.capture is not None:
        problem = features_configs.db_upgrade(path)
        if problem is not None:
            raise procs.StartError(problem)
    lag_file = workdir / f"looplag-{spec.name}{'-steps' if steps else ''}.json"
    lag_file.unlink(missing_ok=True)  # a window is new when its seq is above the file's
    argv = procs.serve_command(path, port)
    taskset = shutil.which("taskset")
    if pinning is not None and taskset is not None:
        argv = [taskset, "-c", ",".join(map(str, sorted(pinning.gateway))), *argv]
    env = {**os.environ, LOOPLAG_ENV: str(lag_file)}
    if steps:
        env[STEPS_ENV] = "1"
    service = procs.spawn(f"gateway-tail-{spec.name}", argv, port, workdir, cwd=workdir, env=env)
    if pinning is not None and taskset is None:
        cores.set_affinity(service.process.pid, pinning.gateway)
    try:
        seconds = procs.wait_until(service, procs.chat_request(service.url), 60.0)
    except BaseException:
        service.stop()
        raise
    return service, seconds, lag_file


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


_LINE = re.compile(r":\d+\)$")


def _collapse_lines(text: str) -> str:
    """py-spy's frames without their line numbers, so a function is one frame."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        out.append(";".join(frames) + " " + count)
    return "\n".join(out)


# --- the run --------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    executable: str
    simulator: procs.Service
    workdir: Path
    progress: Progress
    pinning: Pinning | None
    profile: Profile | None = None
    spy_output: Path | None = None

    @property
    def capture(self) -> dict[str, Any]:
        return dict(getattr(self.args, "tail_capture_settings", {}))

    def wrk_load(self, url: str, model: str, connections: int, ttft_ms: int) -> wrk.Load:
        return wrk.Load(f"{url}/v1/chat/completions", model, connections, False, ttft_ms)

    def wrk(self, load: wrk.Load, seconds: int | None = None) -> wrk.WrkResult:
        if self.args.warmup > 0:
            wrk.run(self.executable, load, self.args.warmup, 1)
        return wrk.run(self.executable, load, seconds or self.args.tail_seconds, 1)

    def one_at_a_time(
        self, gateway: procs.Service, stream: bool, calls: int, seconds: float | None = None
    ) -> client.Samples:
        """Up to ``calls`` calls each, direct and gateway alternating, within ``seconds``."""
        samples = client.Samples()
        budget = seconds if seconds is not None else max(30.0, calls * 0.02)
        client.run_async(
            functools.partial(
                client.sequential,
                self.simulator.url,
                gateway.url,
                calls,
                budget,
                stream,
                samples,
            )
        )
        return samples

    def measure(
        self, spec: TailSpec, item: TailResult, index: int, stores: features_configs.Stores
    ) -> None:
        name = spec.name
        self.progress(f"tail: ({index}) {name}: starting the gateway")
        service, seconds, lag_file = start_gateway(
            spec, self.workdir, self.simulator.port, stores, self.pinning, capture=self.capture
        )
        try:
            item.start_s = seconds
            client.run_async(lambda: client.check(self.simulator.url, service.url))
            time.sleep(0.3)
            item.rss_idle = own_rss_bytes(service.process.pid)
            scraper = Scraper(service.url) if spec.metrics else None
            with scraper if scraper is not None else contextlib.nullcontext():
                self.measured(spec, item, service, lag_file, index)
            if scraper is not None:
                item.scrapes = scraper.scrapes
                if scraper.errors:
                    item.errors.append(f"{scraper.errors} /metrics scrapes failed")
            item.rss_peak = peak_rss_bytes(service.process.pid)
            item.writer_rss_peak = children_peak_rss_bytes(service.process.pid)
            item.capture = capture_counts(service.url)
        finally:
            service.stop()

    def measured(
        self, spec: TailSpec, item: TailResult, service: procs.Service, lag_file: Path, index: int
    ) -> None:
        calls, name = self.args.tail_calls, spec.name
        if self.args.tail_warmup > 0:
            self.progress(f"tail: ({index}) {name}: {self.args.tail_warmup} s of warm-up, c=1")
            self.one_at_a_time(service, False, 1_000_000, self.args.tail_warmup)
        self.progress(f"tail: ({index}) {name}: {calls} plain and {calls} streamed calls, c=1")
        before = scheduler_ns(service.process.pid)
        plain = self.one_at_a_time(service, False, calls)
        after = scheduler_ns(service.process.pid)
        item.c1_ms = {target: summarize(values) for target, values in plain.plain_ms.items()}
        item.c1_own_ms = summarize(plain.reported_overhead_ms)
        answered = len(plain.plain_ms["gateway"])
        if answered and after != (0, 0):
            item.c1_cpu_us = (after[0] - before[0]) / answered / 1e3
            item.c1_wait_us = (after[1] - before[1]) / answered / 1e3
        streamed = self.one_at_a_time(service, True, calls)
        item.ttfb_ms = {target: summarize(values) for target, values in streamed.ttfb_ms.items()}
        for target, count in plain.errors.items():
            failed = count + streamed.errors.get(target, 0)
            if failed:
                item.errors.append(f"{failed} one-at-a-time calls failed ({target})")
        gateway = functools.partial(self.wrk_load, service.url, features_configs.ROUTE)
        direct = functools.partial(
            self.wrk_load, self.simulator.url, features_configs.UPSTREAM_MODEL
        )
        self.progress(f"tail: ({index}) {name}: wrk c=10, c=50")
        item.c10 = self.wrk(gateway(10, 0))
        cpu = service.cpu_seconds()
        if self.args.warmup > 0:
            wrk.run(self.executable, gateway(50, 0), self.args.warmup, 1)
            cpu = service.cpu_seconds()
        writer_cpu = service.children_cpu_seconds()
        item.c50 = wrk.run(self.executable, gateway(50, 0), self.args.tail_seconds, 1)
        item.c50_cpu_s = service.cpu_seconds() - cpu
        item.c50_writer_cpu_s = service.children_cpu_seconds() - writer_cpu
        self.progress(f"tail: ({index}) {name}: wrk c=50 with a 50 ms upstream")
        order = ("direct", "gateway") if index % 2 else ("gateway", "direct")
        for target in order:
            load = direct(50, 50) if target == "direct" else gateway(50, 50)
            item.d50[target] = self.wrk(load)
        self.progress(f"tail: ({index}) {name}: loop-lag windows (c=1, c=50)")
        window_calls = max(1, calls // 2)

        def c1() -> int:
            samples = self.one_at_a_time(service, False, window_calls)
            return len(samples.plain_ms["gateway"])

        item.lag["c1"], item.lag_calls["c1"] = lag_window(service, lag_file, c1)
        profile = self.args.tail_profile and name == EVERYTHING

        def c50() -> int:
            spy = self.start_profile(service) if profile else None
            result = wrk.run(self.executable, gateway(50, 0), self.args.tail_seconds, 1)
            if spy is not None:
                self.profile = self.finish_profile(name, spy)
            return result.requests

        item.lag["c50"], item.lag_calls["c50"] = lag_window(service, lag_file, c50)
        for window in ("c1", "c50"):
            if item.lag.get(window) is None:
                item.errors.append(f"no loop-lag figures for the {window} window")

    def steps(self, spec: TailSpec, stores: features_configs.Stores) -> dict[str, dict[str, Any]]:
        """The configuration once more, with its tasks' steps timed, in the two windows."""
        self.progress(f"tail: {spec.name} again, every task's steps timed")
        service, _, lag_file = start_gateway(
            spec,
            self.workdir,
            self.simulator.port,
            stores,
            self.pinning,
            steps=True,
            capture=self.capture,
        )
        out: dict[str, dict[str, Any]] = {}
        calls = max(1, self.args.tail_calls // 2)
        load = self.wrk_load(service.url, features_configs.ROUTE, 50, 0)
        windows: dict[str, Callable[[], int]] = {
            "c1": lambda: len(self.one_at_a_time(service, False, calls).plain_ms["gateway"]),
            "c50": lambda: wrk.run(self.executable, load, self.args.tail_seconds, 1).requests,
        }
        try:
            client.run_async(lambda: client.check(self.simulator.url, service.url))
            scraper = Scraper(service.url) if spec.metrics else None
            with scraper if scraper is not None else contextlib.nullcontext():
                for window, drive in windows.items():
                    snapshot, answered = lag_window(service, lag_file, drive)
                    steps = snapshot.get("steps") if snapshot else None
                    out[window] = {"calls": answered, "steps": steps or {}}
        finally:
            service.stop()
        return out

    def start_profile(self, service: procs.Service) -> subprocess.Popen[bytes] | None:
        beside = Path(sys.executable).parent / "py-spy"  # the venv's
        executable = str(beside) if beside.exists() else shutil.which("py-spy")
        if executable is None:
            self.profile = Profile(EVERYTHING, error="py-spy is not installed")
            return None
        self.spy_output = self.workdir / "py-spy.txt"
        argv = [
            executable,
            "record",
            "--pid",
            str(service.process.pid),
            "--duration",
            str(self.args.tail_seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--output",
            str(self.spy_output),
        ]
        log = (self.workdir / "py-spy.log").open("wb")
        with log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def finish_profile(self, name: str, spy: subprocess.Popen[bytes]) -> Profile:
        try:
            spy.wait(timeout=self.args.tail_seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
            return Profile(name, error="py-spy did not finish")
        if self.spy_output is None or not self.spy_output.exists():
            log = (self.workdir / "py-spy.log").read_text(errors="replace").strip()
            return Profile(name, error=f"py-spy wrote nothing ({log[-200:]})")
        text = _collapse_lines(self.spy_output.read_text(errors="replace"))
        return profile_from_collapsed(name, text, OWN_PACKAGES)

    def execute(self) -> TailResults:
        specs: list[TailSpec] = self.args.tail_specs
        results = TailResults(
            calls=self.args.tail_calls,
            seconds=self.args.tail_seconds,
            warmup_s=self.args.warmup,
            pinning="",  # known once the stores are moved, below
            c1_warmup_s=self.args.tail_warmup,
        )
        results.load["start"] = round(os.getloadavg()[0], 2)
        with contextlib.ExitStack() as stack:
            stores = features_configs.Stores(
                sqlite_url=f"sqlite+aiosqlite:///{self.workdir / 'capture-tail.db'}",
                redis_url=self.args.redis_url,
            )
            if any(s.capture == "postgres" for s in specs):
                url, why = stack.enter_context(
                    features_configs.postgres_scratch(self.args.postgres_url, self.progress)
                )
                stores.postgres_url, stores.postgres_reason = url, why
            if any(s.limits for s in specs):
                prefix, why = stack.enter_context(
                    features_configs.redis_prefix(self.args.redis_url, self.progress)
                )
                stores.redis_prefix, stores.redis_reason = prefix, why
            servers = []
            if self.args.tail_pin_stores:
                servers = cores.store_servers(
                    stores.postgres_url, stores.redis_url if stores.redis_reason is None else None
                )
            stack.enter_context(cores.pinned(self.pinning, self.simulator, servers))
            for index, spec in enumerate(specs, start=1):
                item = TailResult(spec)
                results.configs.append(item)
                reason = unavailable(spec, stores)
                if reason is None:
                    try:
                        self.measure(spec, item, index, stores)
                    except (procs.StartError, client.BadAnswer, wrk.WrkError) as exc:
                        reason = _one_line(exc)
                if reason is not None:
                    self.progress(f"tail: ({index}) {spec.name} not measured: {reason}")
                    item.skipped = reason
            everything = results.config(EVERYTHING)
            if self.args.tail_steps and everything is not None and everything.skipped is None:
                try:
                    results.steps = self.steps(everything.spec, stores)
                except (procs.StartError, client.BadAnswer, wrk.WrkError) as exc:
                    self.progress(f"tail: the steps' run failed: {_one_line(exc)}")
        results.pinning = self.pinning.text if self.pinning else "nothing pinned (one core)"
        results.profile = self.profile
        results.load["end"] = round(os.getloadavg()[0], 2)
        return results


def run(
    args: argparse.Namespace,
    executable: str,
    simulator: procs.Service,
    workdir: Path,
    progress: Progress,
) -> TailResults:
    """Every configuration asked for, one after the other; the scratch stores gone after."""
    return Run(args, executable, simulator, workdir, progress, cores.plan_pinning()).execute()
