"""Running wrk with bench/post.lua and reading the one JSON line its done() callback prints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("post.lua")
MARKER = "BENCH_JSON "
PERCENTILES = ("p50", "p90", "p99", "p99.9")


class WrkError(Exception):
    """wrk could not run, or printed no result line."""


@dataclass(frozen=True)
class Load:
    """What one wrk run sends: where, how many connections, and the simulated upstream delay."""

    url: str
    model: str
    connections: int
    stream: bool
    ttft_ms: int
    token_ms: int = 0
    key: str = "sk-bench"
    api: str = "openai"
    """The call's format: ``openai`` (chat completions) or ``anthropic`` (Messages, to a
    ``/v1/messages`` URL)."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    """connect, read, write, status (responses with a status >= 400) and timeout."""
    latency_ms: dict[str, float]
    """mean, stdev, max and the percentiles p50, p90, p99, p99.9, in milliseconds."""

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "latency_ms": self.latency_ms,
        }


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (`make bench` installs it: apt-get install wrk)")
    return path


def wrk_version(executable: str) -> str:
    """wrk's first line of `-v`, e.g. ``wrk debian/4.1.0-3+b2 [epoll]``."""
    done = subprocess.run([executable, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()[:1]
    match = re.match(r"(wrk \S+ \[\w+\])", first[0]) if first else None
    return match.group(1) if match else "wrk (unknown version)"


def command(executable: str, load: Load, seconds: int, threads: int) -> list[str]:
    threads = max(1, min(threads, load.connections))
    return [
        executable,
        f"-t{threads}",
        f"-c{load.connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(SCRIPT),
        load.url,
        "--",
        f"model={load.model}",
        f"stream={int(load.stream)}",
        f"ttft={load.ttft_ms}",
        f"token={load.token_ms}",
        f"key={load.key}",
        *([f"api={load.api}"] if load.api != "openai" else []),
    ]


def parse_output(stdout: str) -> WrkResult:
    """The result from wrk's stdout: the last ``BENCH_JSON`` line, other text ignored."""
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise WrkError("wrk printed no BENCH_JSON line (did bench/post.lua's done() run?)")
    data = json.loads(lines[-1][len(MARKER) :])
    latency_us: dict[str, float] = data["latency_us"]
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_us"]) / 1e6,
        errors={name: int(count) for name, count in data["errors"].items()},
        latency_ms={name: round(float(value) / 1000.0, 3) for name, value in latency_us.items()},
    )


def run(executable: str, load: Load, seconds: int, threads: int) -> WrkResult:
    argv = command(executable, load, seconds, threads)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish in {seconds + 30} s: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout}")
    return parse_output(done.stdout)
