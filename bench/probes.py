"""What the tail benchmark reads off a running gateway: its memory, its capture counters, its
loop-lag sampler's windows, and a /metrics scraper that reads it as Prometheus would.

Process figures come from /proc (through psutil); the gateway's from its /metrics and the
sampler's file (gateway/looplag.py), so the benchmark never imports the gateway.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench import procs

SCRAPE_PERIOD_S = 1.0


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def own_rss_bytes(pid: int) -> int:
    """The process's resident memory, without its children's (the capture writer's is reported
    on its own), 0 when unreadable."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def children_peak_rss_bytes(pid: int) -> int:
    """The summed high-water marks of the processes ``pid`` started (the capture writer)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    return sum(peak_rss_bytes(child.pid) for child in children)


_CAPTURE_LINE = re.compile(r'^gateway_capture_records_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


_QUEUE_LINE = re.compile(r"^gateway_capture_queue_depth ([0-9.e+]+)$", re.M)


def capture_counts(url: str) -> dict[str, int]:
    """The capture's records by outcome, from /metrics (empty when capture is off)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    counts = {outcome: int(float(value)) for outcome, value in _CAPTURE_LINE.findall(text)}
    depth = _QUEUE_LINE.search(text)
    if depth is not None:
        counts["queue_depth"] = int(float(depth.group(1)))
    return counts


class Scraper:
    """GET /metrics every ``period`` seconds on a thread, as Prometheus would (more often)."""

    def __init__(self, url: str, period: float = SCRAPE_PERIOD_S) -> None:
        self.url = f"{url}/metrics"
        self.period = period
        self.scrapes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    response.read()
                self.scrapes += 1
            except (OSError, urllib.error.URLError):
                self.errors += 1


def _read_lag(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def lag_window(service: procs.Service, path: Path, run: Callable[[], int]) -> tuple[Any, int]:
    """``run()`` with the gateway's sampler on: (its snapshot or None, run()'s calls)."""
    previous = _read_lag(path)
    seq = int(previous["seq"]) if previous else 0
    os.kill(service.process.pid, signal.SIGUSR1)
    time.sleep(0.05)
    calls = run()
    os.kill(service.process.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        data = _read_lag(path)
        if data is not None and int(data.get("seq", 0)) > seq:
            return data, calls
        time.sleep(0.02)
    return None, calls


def scheduler_ns(pid: int) -> tuple[int, int]:
    """The process's threads' time on a core and time waiting for one (runnable, not running),
    summed, in nanoseconds (``/proc/PID/task/*/schedstat``); (0, 0) when unreadable."""
    cpu = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as stat:
                fields = stat.read().split()
            cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return cpu, wait
