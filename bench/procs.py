"""The processes under test: the simulated upstream and the gateway, started and stopped here.

Each runs in its own session (so a Ctrl-C in the terminal reaches only the benchmark, which then
stops them in order) with its output in a log file whose tail is shown when it fails to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

GATEWAY_KEY = "sk-bench"
ROUTE = "bench-model"
UPSTREAM_MODEL = "gpt-4o-mini"
ZERO_LATENCY = {"ttft_ms": 0, "token_ms": 0, "jitter": 0}
PROFILE: dict[str, Any] = {"default": ZERO_LATENCY, "models": {"*": ZERO_LATENCY}}
CHAT_BODY = {
    "model": ROUTE,
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hello."},
    ],
    "max_tokens": 16,
}


class StartError(Exception):
    """A process did not start or did not answer in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_command() -> list[str]:
    """``gateway`` beside this interpreter (the venv's), else ``python -m gateway``."""
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def serve_command(
    config: Path, port: int, workers: int = 1, gateway: list[str] | None = None
) -> list[str]:
    """``gateway serve`` of ``config`` on ``port``, quiet (``gateway``: how to run the gateway,
    by default ``gateway_command()``)."""
    return [
        *(gateway if gateway is not None else gateway_command()),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]


def gateway_config(upstream_port: int, port: int) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "access_log": False},
        "auth": {"keys": [{"name": "bench", "key": GATEWAY_KEY}]},
        "providers": {
            "sim": {"base_url": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "sk-upstream"}
        },
        "routes": {
            ROUTE: {"variants": {"only": {"provider": "sim", "model": UPSTREAM_MODEL}}},
        },
        # The core matrix measures the proxy as the core issue defines it; what capture, limits,
        # shadows and the cache add is measured beside it (bench/features.py).
        "capture": {"enabled": False},
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    """perf_counter() just before the spawn."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, reason: str) -> StartError:
        return StartError(
            f"{self.name}: {reason}\n--- last lines of {self.log} ---\n{self.log_tail()}"
        )

    def rss_bytes(self) -> int:
        """Resident memory of the process and any children it started."""
        try:
            root = psutil.Process(self.process.pid)
            members = [root, *root.children(recursive=True)]
            return sum(int(member.memory_info().rss) for member in members)
        except psutil.Error:
            return 0

    def children_cpu_seconds(self) -> float:
        """User and system CPU time the processes it started (the capture writer) have used."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0.0
        for child in children:
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                total += float(times.user + times.system)
        return total

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        try:
            times = psutil.Process(self.process.pid).cpu_times()
            return float(times.user + times.system)
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        """SIGTERM to the service's process group, SIGKILL after 10 s."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def spawn(
    name: str,
    argv: list[str],
    port: int,
    workdir: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Service:
    log = workdir / f"{name}.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, port, process, log, started)


def _answers(request: urllib.request.Request, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.HTTPError):
        return False


def wait_until(service: Service, request: urllib.request.Request, seconds: float) -> float:
    """Poll with ``request`` until it is answered with a 2xx; the time since the spawn."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise service.fail(f"exited with status {service.process.returncode}")
        if _answers(request, timeout=2.0):
            return time.perf_counter() - service.started
        time.sleep(0.01)
    raise service.fail(f"did not answer in {seconds:.0f} s")


def start_simulator(workdir: Path, template: str | None) -> Service:
    """``gateway simulate`` on a zero-latency profile (or ``template``, {port} and {profile})."""
    port = free_port()
    profile = write_yaml(workdir / "simulator-profile.yaml", PROFILE)
    if template:
        argv = shlex.split(template.format(port=port, profile=profile))
    else:
        argv = [*gateway_command(), "simulate", "--port", str(port), "--profile", str(profile)]
    service = spawn("simulator", argv, port, workdir)
    try:
        wait_until(service, urllib.request.Request(f"{service.url}/_sim/health"), 30.0)
    except BaseException:
        service.stop()
        raise
    return service


def chat_request(url: str) -> urllib.request.Request:
    return urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(CHAT_BODY).encode(),
        method="POST",
        headers={
            "authorization": f"Bearer {GATEWAY_KEY}",
            "content-type": "application/json",
            "x-sim-ttft-ms": "0",
            "x-sim-token-ms": "0",
        },
    )


def start_gateway(workdir: Path, upstream_port: int) -> tuple[Service, float]:
    """``gateway serve`` with one worker; also the seconds from spawn to its first chat answer."""
    port = free_port()
    config = write_yaml(workdir / "gateway.yaml", gateway_config(upstream_port, port))
    argv = serve_command(config, port)
    # Run in the temp directory: the config leaves `capture` at its default (on, SQLite at
    # ./gateway.db), which must not be the repository's own, stale, growing gateway.db.
    service = spawn("gateway", argv, port, workdir, cwd=workdir)
    try:
        seconds = wait_until(service, chat_request(service.url), 60.0)
    except BaseException:
        service.stop()
        raise
    return service, seconds
