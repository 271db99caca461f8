"""bench/cores.py: the tail benchmark's pinning, on real processes (a child of this test with a
thread and a child of its own, standing in for a store's server), and the stores' servers found
through the real PostgreSQL and Redis of this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench import cores, procs
from tests.capture_support import pg_url, postgres_unreachable

# A process with a second thread and a child process, like a server with workers.
SERVER = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
time.sleep(60)
"""


def _affinities(pid: int) -> list[set[int]]:
    """Every thread's of the process and of its descendants."""
    process = psutil.Process(pid)
    found = []
    for member in (process, *process.children(recursive=True)):
        for tid in os.listdir(f"/proc/{member.pid}/task"):
            found.append(os.sched_getaffinity(int(tid)))
    return found


@pytest.fixture
def server() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while len(psutil.Process(process.pid).threads()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield process
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


@pytest.fixture
def pinning() -> cores.Pinning:
    found = cores.plan_pinning()
    if found is None:
        pytest.skip("one core: nothing is pinned")
    return found


def test_pinned_moves_this_process_the_simulator_and_the_stores_and_gives_them_back(
    server: subprocess.Popen[str], pinning: cores.Pinning, tmp_path: Path
) -> None:
    simulator = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    service = procs.Service("simulator", 0, simulator, tmp_path / "log", 0.0)
    before = _affinities(server.pid)
    mine = os.sched_getaffinity(0)
    try:
        store = cores.Store("Redis", server.pid)
        with cores.pinned(pinning, service, [store]):
            assert os.sched_getaffinity(0) == pinning.others
            assert os.sched_getaffinity(simulator.pid) == pinning.others
            assert len(_affinities(server.pid)) >= 3  # the thread and the child counted
            assert all(cores_ == pinning.others for cores_ in _affinities(server.pid))
            assert pinning.stores == [f"Redis (pid {server.pid})"] and not pinning.unmoved
            assert f"the stores' servers (Redis (pid {server.pid})) to core" in pinning.text
        assert os.sched_getaffinity(0) == mine
        assert _affinities(server.pid) == before
        assert os.sched_getaffinity(simulator.pid) == pinning.saved
    finally:
        simulator.kill()
        simulator.wait()


def test_a_store_that_is_gone_is_named_not_moved(pinning: cores.Pinning, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    simulator = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        service = procs.Service("simulator", 0, simulator, tmp_path / "log", 0.0)
        with cores.pinned(pinning, service, [cores.Store("PostgreSQL", gone.pid)]):
            assert pinning.stores == []
            assert pinning.unmoved and pinning.unmoved[0].startswith(f"PostgreSQL (pid {gone.pid})")
        assert "not moved: PostgreSQL" in pinning.text
    finally:
        simulator.kill()
        simulator.wait()


def test_a_pid_that_is_not_the_store_s_is_not_taken_for_it(server: subprocess.Popen[str]) -> None:
    # A server on another host answers with its own pid, which here is some other process.
    assert cores.local_server(server.pid, "PostgreSQL") is None
    assert cores.local_server(server.pid, "Redis") is None
    assert cores.local_server(None, "Redis") is None


def test_the_servers_of_this_machine_s_postgresql_and_redis_are_found() -> None:
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(reason)
    found = cores.store_servers(pg_url("test"), "redis://127.0.0.1:6379/0")
    names = {store.name: store for store in found}
    assert set(names) == {"PostgreSQL", "Redis"}
    postmaster = psutil.Process(names["PostgreSQL"].pid)
    assert "postgres" in postmaster.name()
    assert postmaster.children()  # the backends are its children: they follow it when moved
    assert "redis" in psutil.Process(names["Redis"].pid).name()
    # Nothing answers there: nothing found, nothing raised.
    assert cores.store_servers(None, "redis://127.0.0.1:1/0") == []
