"""Real processes for the tests: the gateway under uvicorn and the simulated upstream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ZERO_LATENCY_PROFILE = {"default": {"ttft_ms": 0, "token_ms": 0}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"{url} did not come up in {seconds} s:\n{log.read_text()}")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(args: list[str], log: Path, env: Mapping[str, str] | None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )


def start_simulator(
    workdir: Path, profile: Mapping[str, Any] | None = None, port: int | None = None
) -> Running:
    port = port or free_port()
    profile_path = workdir / f"simulator-{port}.yaml"
    profile_path.write_text(yaml.safe_dump(dict(profile or ZERO_LATENCY_PROFILE)))
    log = workdir / f"simulator-{port}.log"
    process = _spawn(["simulate", "--port", str(port), "--profile", str(profile_path)], log, None)
    running = Running(process, port, log)
    wait_for(f"{running.url}/_sim/health", process, log)
    return running


def start_gateway(
    workdir: Path,
    config: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Running:
    port = free_port()
    config = dict(config)
    # Never the default gateway.db in the working directory: a store of the test's own.
    config.setdefault(
        "capture", {"database_url": f"sqlite+aiosqlite:///{workdir}/capture-{port}.db"}
    )
    config_path = workdir / f"gateway-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = workdir / f"gateway-{port}.log"
    args = ["serve", "--config", str(config_path), "--port", str(port), *(extra_args or [])]
    process = _spawn(args, log, env)
    running = Running(process, port, log)
    wait_for(f"{running.url}/readyz", process, log)
    return running
