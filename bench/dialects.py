"""What a provider dialect costs a call (issue 12's targets), measured beside the simulator.

Part of ``make bench`` (``--only dialects`` runs only this). Usage::

    make bench BENCH_ARGS='--only dialects'                 # ~6 minutes
    make bench BENCH_ARGS='--quick --only dialects'         # ~1 minute
    git worktree add /tmp/bench-base 0448ea9                # the gateway before dialects
    .venv/bin/python -m bench.run --only dialects --dialects-baseline /tmp/bench-base

Processes. Beside the run's simulator (which answers both ``/v1/chat/completions`` and
Anthropic's ``/v1/messages``, zero latency, each call setting ``x-sim-ttft-ms: 0`` and
``x-sim-token-ms: 0``), three gateways (``python -m gateway serve --workers 1``, key auth on,
capture off), each started once:

  a. ``--dialects-baseline PATH``: the gateway of another checkout (e.g. a worktree of the
     commit before the dialect work), with the matrix's config (one OpenAI-format provider, one
     route ``bench-model`` -> ``gpt-4o-mini``). It runs on ``PATH/.venv/bin/python`` when that
     exists, else on this interpreter with ``PYTHONPATH=PATH``; that ``gateway`` is imported
     from PATH is checked before it starts. Without the option (CI has no worktree) (a) is
     "not measured" and (b) is compared with the simulator direct only.
  b. this gateway with the same config;
  c-f. this gateway with an OpenAI-format provider and an ``api: anthropic`` one, routes
     ``bench-model`` -> ``gpt-4o-mini`` and ``bench-claude`` -> ``claude-sonnet-4-5``, called
     as (c) OpenAI -> OpenAI, (d) OpenAI -> Anthropic, (e) Anthropic -> Anthropic, (f)
     Anthropic -> OpenAI (Anthropic calls go to ``/v1/messages`` with ``x-api-key`` and
     ``anthropic-version``, as the anthropic SDK sends them).

Each target's answer is checked first (status, the inbound dialect's shape, the end of the
stream, ``x-gateway-upstream-model``), so a call that is not translated cannot pass for one.

Measurements. wrk ``-t1 -c1`` with bench/post.lua (``api=anthropic`` for the Messages format)
against the simulator direct in each dialect and every configuration, plain and streamed, in
``--dialects-rounds`` interleaved rounds (a warm-up run, then ``--dialects-seconds`` measured;
each configuration's runs next to those of the one it is compared with, their order alternating
from round to round). Then an asyncio client calls every target one at a
time, targets alternating call by call: streamed calls timed to their first body chunk, plain
calls to their end with the gateway's ``x-gateway-overhead-ms``. The CPU time the process
under test (the gateway; the simulator for direct calls) used during each measured wrk run is
read too (per call, a second figure; it also grows when other processes share the cores).
bench/dialects_results.py aggregates and compares each configuration with its same-dialect
one; bench/dialects_report.py marks the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import client, procs, wrk
from bench.dialects_results import (
    DIRECT,
    MODES,
    SPECS,
    Api,
    Baseline,
    ClientFigures,
    DialectResults,
    DialectSpec,
    Process,
    series_key,
)
from bench.features_configs import MESSAGES, chat_body
from bench.rounds import Series, round_order
from bench.stats import summarize

ROUTE = procs.ROUTE
CLAUDE_ROUTE = "bench-claude"
UPSTREAM_MODEL = procs.UPSTREAM_MODEL
CLAUDE_MODEL = "claude-sonnet-4-5"
KEY = procs.GATEWAY_KEY
ANTHROPIC_VERSION = "2023-06-01"
REPOSITORY = Path(__file__).resolve().parents[1]
Progress = Callable[[str], None]


# --- arguments ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dialects (bench/dialects.py; --only dialects)")
    group.add_argument(
        "--dialects-baseline",
        type=Path,
        metavar="PATH",
        help="a checkout of the gateway to compare the same-dialect call with (e.g. a worktree "
        "of 0448ea9, before the dialect work); without it, it is compared with the simulator "
        "direct only",
    )
    group.add_argument("--dialects-rounds", type=int, help="interleaved rounds (7, quick 2)")
    group.add_argument(
        "--dialects-seconds", type=int, help="measured seconds per wrk run (2, quick 1)"
    )
    group.add_argument(
        "--dialects-calls",
        type=int,
        help="one-at-a-time calls per target, streamed and as many plain (1000, quick 100)",
    )


def finish_arguments(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on ``--quick``."""
    quick = bool(args.quick)
    if args.dialects_rounds is None:
        args.dialects_rounds = 2 if quick else 7
    if args.dialects_seconds is None:
        args.dialects_seconds = 1 if quick else 2
    if args.dialects_calls is None:
        args.dialects_calls = 100 if quick else 1000


# --- calls ----------------------------------------------------------------------------------


def anthropic_body(model: str, stream: bool) -> bytes:
    """bench/post.lua's call with ``api=anthropic``: the same prompt in the Messages format."""
    system, user = MESSAGES
    data: dict[str, Any] = {
        "model": model,
        "system": system["content"],
        "messages": [user],
        "max_tokens": 16,
    }
    if stream:
        data["stream"] = True
    return json.dumps(data, separators=(",", ":")).encode()


def body(api: Api, model: str, stream: bool) -> bytes:
    return anthropic_body(model, stream) if api == "anthropic" else chat_body(model, False, stream)


def headers(api: Api) -> dict[str, str]:
    common = {"content-type": "application/json", "x-sim-ttft-ms": "0", "x-sim-token-ms": "0"}
    if api == "anthropic":
        return {**common, "x-api-key": KEY, "anthropic-version": ANTHROPIC_VERSION}
    return {**common, "authorization": f"Bearer {KEY}"}


PATHS: dict[Api, str] = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


@dataclass(frozen=True)
class Target:
    """Where one target's calls go, and what its answers must look like."""

    name: str
    base_url: str
    api: Api
    """The format the client sends and gets back (the inbound dialect)."""
    model: str
    upstream_model: str | None
    """The ``x-gateway-upstream-model`` a gateway must answer with (None: the simulator)."""
    service: procs.Service

    @property
    def url(self) -> str:
        return self.base_url + PATHS[self.api]

    def load(self, stream: bool) -> wrk.Load:
        return wrk.Load(self.url, self.model, 1, stream, 0, api=self.api)


def route_for(config: DialectSpec) -> tuple[str, str]:
    """(the model the client asks for, the upstream model that must answer)."""
    if config.upstream == "anthropic":
        return CLAUDE_ROUTE, CLAUDE_MODEL
    return ROUTE, UPSTREAM_MODEL


def stream_complete(api: Api, tail: bytes) -> bool:
    """Whether a stream's last bytes are its dialect's end."""
    if api == "anthropic":
        return b"message_stop" in tail
    return b"[DONE]" in tail


async def check(target: Target) -> str | None:
    """A plain and a streamed call: None when answered as this target should, else what not."""
    async with aiohttp.ClientSession(timeout=client.TIMEOUT) as session:
        for stream in (False, True):
            payload = body(target.api, target.model, stream)
            async with session.post(target.url, data=payload, headers=headers(target.api)) as r:
                raw = await r.read()
                kind = "streamed" if stream else "plain"
                if r.status != 200:
                    return f"{kind}: status {r.status}: {raw[:300]!r}"
                upstream = r.headers.get("x-gateway-upstream-model")
                if target.upstream_model is not None and upstream != target.upstream_model:
                    return f"{kind}: x-gateway-upstream-model is {upstream!r}"
                if stream:
                    if not stream_complete(target.api, raw[-200:]):
                        return f"{kind}: the stream did not end as {target.api}'s: {raw[-200:]!r}"
                    continue
                answer = json.loads(raw)
                shape = answer.get("type") if target.api == "anthropic" else answer.get("object")
                if shape != ("message" if target.api == "anthropic" else "chat.completion"):
                    return f"{kind}: not a {target.api} answer: {raw[:300]!r}"
    return None


# --- gateways -------------------------------------------------------------------------------


def gateway_config(process: Process, upstream_port: int, port: int) -> dict[str, Any]:
    """(a) and (b): the matrix's config; (c)-(f): one provider and one route per dialect."""
    data = procs.gateway_config(upstream_port, port)
    data["capture"] = {"enabled": False}
    if process == "dialects":
        data["providers"]["claude"] = {
            "base_url": f"http://127.0.0.1:{upstream_port}/v1",
            "api": "anthropic",
            "api_key": "sk-upstream",
        }
        data["routes"][CLAUDE_ROUTE] = {
            "variants": {"only": {"provider": "claude", "model": CLAUDE_MODEL}}
        }
    return data


@dataclass(frozen=True)
class Interpreter:
    """How a gateway process is run: which Python, with which environment."""

    python: str
    env: dict[str, str]
    root: Path
    """Where its ``gateway`` package must be imported from."""


def current_interpreter() -> Interpreter:
    """This interpreter, importing the gateway of the checkout this module is in (also when
    it is run from a worktree while the venv's editable install points at another)."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    return Interpreter(sys.executable, env, REPOSITORY)


def baseline_interpreter(path: Path) -> Interpreter:
    """The checkout's own venv if it has one, else this interpreter with PYTHONPATH=path."""
    root = path.resolve()
    env = dict(os.environ)
    venv = root / ".venv" / "bin" / "python"
    if venv.exists():
        env.pop("PYTHONPATH", None)
        return Interpreter(str(venv), env, root)
    env["PYTHONPATH"] = str(root)
    return Interpreter(sys.executable, env, root)


def gateway_origin(interpreter: Interpreter, cwd: Path) -> Path:
    """The directory the interpreter imports ``gateway`` from (StartError when it cannot)."""
    argv = [interpreter.python, "-c", "import gateway; print(gateway.__file__)"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=interpreter.env, cwd=cwd, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise procs.StartError(f"{interpreter.python}: {exc}") from None
    if done.returncode != 0:
        raise procs.StartError(f"cannot import gateway: {done.stderr.strip()[-300:]}")
    return Path(done.stdout.strip()).resolve().parent.parent


def commit_of(path: Path) -> str:
    """The checkout's short commit, ``+`` when its work tree differs; ``?`` without git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def start_gateway(
    name: str, process: Process, interpreter: Interpreter, workdir: Path, upstream_port: int
) -> procs.Service:
    origin = gateway_origin(interpreter, workdir)
    if origin != interpreter.root:
        raise procs.StartError(
            f"{name}: `gateway` is imported from {origin}, not from {interpreter.root}"
        )
    port = procs.free_port()
    path = procs.write_yaml(
        workdir / f"gateway-{name}.yaml", gateway_config(process, upstream_port, port)
    )
    argv = procs.serve_command(path, port, gateway=[interpreter.python, "-m", "gateway"])
    service = procs.spawn(f"gateway-{name}", argv, port, workdir, cwd=workdir, env=interpreter.env)
    try:
        procs.wait_until(service, procs.chat_request(service.url), 60.0)
    except BaseException:
        service.stop()
        raise
    return service


# --- one call at a time ---------------------------------------------------------------------


@dataclass
class Samples:
    ttfb_ms: list[float] = field(default_factory=list)
    stream_ms: list[float] = field(default_factory=list)
    plain_ms: list[float] = field(default_factory=list)
    header_ms: list[float] = field(default_factory=list)
    errors: int = 0


async def _streamed(
    session: aiohttp.ClientSession, target: Target, payload: bytes
) -> tuple[float, float]:
    """The times to the first body chunk and to the end; ValueError when the stream is not
    whole."""
    started = time.perf_counter()
    async with session.post(target.url, data=payload, headers=headers(target.api)) as response:
        tail = await response.content.readany()
        first = time.perf_counter()
        async for chunk in response.content.iter_any():
            tail = (tail + chunk)[-64:]
        end = time.perf_counter()
        if response.status != 200 or not stream_complete(target.api, tail):
            raise ValueError(f"status {response.status}, tail {tail!r}")
    return (first - started) * 1000.0, (end - started) * 1000.0


async def _plain(
    session: aiohttp.ClientSession, target: Target, payload: bytes
) -> tuple[float, str | None]:
    started = time.perf_counter()
    async with session.post(target.url, data=payload, headers=headers(target.api)) as response:
        await response.read()
        elapsed = (time.perf_counter() - started) * 1000.0
        if response.status != 200:
            raise ValueError(f"status {response.status}")
        return elapsed, response.headers.get("x-gateway-overhead-ms")


async def one_at_a_time(targets: list[Target], calls: int) -> dict[str, Samples]:
    """``calls`` streamed calls per target, then as many plain, one at a time, the targets
    alternating call by call (their order rotating)."""
    samples = {target.name: Samples() for target in targets}
    by_name = {target.name: target for target in targets}
    names = list(by_name)
    sessions = {
        name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=client.TIMEOUT)
        for name in names
    }
    try:
        for stream in (True, False):
            payloads = {t.name: body(t.api, t.model, stream) for t in targets}
            for index in range(calls):
                for name in round_order(names, index):
                    target, sample = by_name[name], samples[name]
                    try:
                        if stream:
                            ttfb, whole = await _streamed(sessions[name], target, payloads[name])
                            sample.ttfb_ms.append(ttfb)
                            sample.stream_ms.append(whole)
                        else:
                            elapsed, header = await _plain(sessions[name], target, payloads[name])
                            sample.plain_ms.append(elapsed)
                            if header is not None:
                                sample.header_ms.append(float(header))
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        sample.errors += 1
    finally:
        for session in sessions.values():
            await session.close()
    return samples


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to this repository when inside it."""
    try:
        return str(path.absolute().relative_to(REPOSITORY))
    except ValueError:
        return str(path)


def paired_order(names: list[str], round_index: int) -> list[str]:
    """Round r's wrk runs: plain then streamed (streamed first on odd rounds), each half in
    ``names``' order (reversed on odd rounds). With :data:`ORDER`, a configuration runs next
    to the one it is compared with, so a burst of load from elsewhere on the machine tends to
    reach both, and which of the two runs first alternates from round to round."""
    ordered = [name for name in ORDER if name in names]
    ordered += [name for name in names if name not in ORDER]
    if round_index % 2:
        ordered.reverse()
    modes = MODES[::-1] if round_index % 2 else MODES
    return [series_key(name, mode) for mode in modes for name in ordered]


ORDER = (
    DIRECT["openai"],
    "before",
    "now",
    "openai-openai",
    "openai-anthropic",
    DIRECT["anthropic"],
    "anthropic-anthropic",
    "anthropic-openai",
)
"""The targets in the order they run in a round: each configuration beside its reference (and
the translated OpenAI call beside the Anthropic direct it is measured over)."""


# --- the run --------------------------------------------------------------------------------


@dataclass
class Run:
    """One dialects run: its arguments, processes and results."""

    args: argparse.Namespace
    executable: str
    simulator: procs.Service
    workdir: Path
    progress: Progress
    results: DialectResults = field(init=False)
    gateways: dict[Process, procs.Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = DialectResults(
            rounds=self.args.dialects_rounds,
            seconds=self.args.dialects_seconds,
            warmup_s=self.args.warmup,
            client_calls=self.args.dialects_calls,
            commit=commit_of(REPOSITORY),
        )

    def start(self, stack: contextlib.ExitStack) -> None:
        path: Path | None = self.args.dialects_baseline
        plan: list[tuple[Process, Interpreter]] = []
        if path is None:
            self.results.skipped["before"] = "no --dialects-baseline"
        else:
            interpreter = baseline_interpreter(path)
            self.results.baseline = Baseline(
                str(path), commit_of(path), _shown(Path(interpreter.python))
            )
            plan.append(("baseline", interpreter))
        plan += [("current", current_interpreter()), ("dialects", current_interpreter())]
        for process, interpreter in plan:
            self.progress(f"dialects: starting gateway ({process}) on {interpreter.python}")
            try:
                service = start_gateway(
                    process, process, interpreter, self.workdir, self.simulator.port
                )
            except procs.StartError as exc:
                if process != "baseline":
                    raise
                reason = f"did not start: {str(exc).splitlines()[0][:200]}"
                self.progress(f"dialects: the baseline gateway {reason}")
                self.results.skipped["before"] = reason
                continue
            stack.callback(service.stop)
            self.gateways[process] = service

    def targets(self) -> list[Target]:
        url = self.simulator.url
        out = [
            Target(DIRECT["openai"], url, "openai", UPSTREAM_MODEL, None, self.simulator),
            Target(DIRECT["anthropic"], url, "anthropic", CLAUDE_MODEL, None, self.simulator),
        ]
        for config in SPECS:
            service = self.gateways.get(config.process)
            if service is None:
                continue
            model, upstream = route_for(config)
            out.append(Target(config.name, service.url, config.inbound, model, upstream, service))
        return out

    def rounds(self, targets: list[Target]) -> None:
        args, results = self.args, self.results
        names = [t.name for t in targets]
        by_key = {series_key(t.name, mode): (t, mode) for t in targets for mode in MODES}
        for key in by_key:
            results.series[key] = Series(key)
        total, step = args.dialects_rounds * len(by_key), 0
        for round_index in range(args.dialects_rounds):
            for key in paired_order(names, round_index):
                step += 1
                target, mode = by_key[key]
                self.progress(
                    f"dialects: round {round_index + 1}/{args.dialects_rounds} {key} "
                    f"({step}/{total})"
                )
                series = results.series[key]
                load = target.load(mode == "stream")
                try:
                    if args.warmup > 0:
                        wrk.run(self.executable, load, args.warmup, 1)
                    cpu = target.service.cpu_seconds()
                    measured = wrk.run(self.executable, load, args.dialects_seconds, 1)
                    series.cpu_s.append(target.service.cpu_seconds() - cpu)
                    series.runs.append(measured)
                except wrk.WrkError as exc:
                    series.errors.append(f"round {round_index + 1}: {str(exc)[:200]}")
                    series.runs.append(None)

    def execute(self) -> DialectResults:
        self.results.load["start"] = round(os.getloadavg()[0], 2)
        with contextlib.ExitStack() as stack:
            self.start(stack)
            targets = self.targets()
            for target in targets:
                problem = client.run_async(functools.partial(check, target))
                if problem is not None:
                    raise client.BadAnswer(f"dialects: {target.name}: {problem}")
            self.rounds(targets)
            self.progress(
                f"dialects: one call at a time, {self.args.dialects_calls} streamed and as many "
                f"plain per target ({len(targets)} targets)"
            )
            samples = client.run_async(lambda: one_at_a_time(targets, self.args.dialects_calls))
            for name, sample in samples.items():
                self.results.client[name] = ClientFigures(
                    ttfb_ms=summarize(sample.ttfb_ms),
                    stream_ms=summarize(sample.stream_ms),
                    plain_ms=summarize(sample.plain_ms),
                    header_ms=summarize(sample.header_ms),
                    errors=sample.errors,
                )
            self.progress("dialects: stopping the gateways")
        self.results.load["end"] = round(os.getloadavg()[0], 2)
        return self.results


def run(
    args: argparse.Namespace,
    executable: str,
    simulator: procs.Service,
    workdir: Path,
    progress: Progress,
) -> DialectResults:
    """The whole part; its gateways are stopped after (also on an error)."""
    return Run(args, executable, simulator, workdir, progress).execute()
