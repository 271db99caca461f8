"""Fixtures that run the simulator as its own process, the way the gateway meets it."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]
FAST = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "0"}
"""Headers that take the latency out of a call, for tests that are not about timing."""

# Test modules import names from here only under TYPE_CHECKING: pytest loads this file as
# `conftest`, and a runtime import would load it a second time under another name.


@dataclass
class RunningSimulator:
    process: subprocess.Popen[str]
    base_url: str
    fast: ClassVar[dict[str, str]] = FAST

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def client(self, fast: bool = True, timeout: float = 30.0) -> OpenAI:
        headers = FAST if fast else None
        return OpenAI(
            base_url=self.v1, api_key="x", max_retries=0, default_headers=headers, timeout=timeout
        )

    def recorded(self) -> list[dict[str, object]]:
        response = httpx.get(self.base_url + "/_sim/requests")
        response.raise_for_status()
        entries: list[dict[str, object]] = response.json()
        return entries

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_simulator(profile_path: str | None = None, timeout: float = 15.0) -> RunningSimulator:
    """Start ``run('127.0.0.1', 0, profile)``, read the port it prints, wait for /_sim/health."""
    code = f"from simulator.server import run; run('127.0.0.1', 0, {profile_path!r})"
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith("simulator listening on http://"):
        process.kill()
        raise RuntimeError(f"the simulator did not start: {line!r}")
    running = RunningSimulator(process, line.removeprefix("simulator listening on "))
    while True:
        try:
            if httpx.get(running.base_url + "/_sim/health").json() == {"ok": True}:
                return running
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError("the simulator never answered /_sim/health")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def simulator() -> Iterator[RunningSimulator]:
    """One simulator on the built-in profile, shared by the session."""
    running = start_simulator()
    yield running
    running.stop()


@pytest.fixture
def client(simulator: RunningSimulator) -> OpenAI:
    """The official SDK against the simulator, no retries, no simulated latency."""
    return simulator.client()


@pytest.fixture
def simulator_with_profile(tmp_path: Path) -> Iterator[Callable[[str], RunningSimulator]]:
    """Start a simulator on a profile given as YAML text; stopped after the test."""
    started: list[RunningSimulator] = []

    def start(profile_yaml: str) -> RunningSimulator:
        path = tmp_path / f"profile-{len(started)}.yaml"
        path.write_text(profile_yaml)
        running = start_simulator(str(path))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
