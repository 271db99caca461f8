"""Capture when things go wrong, through real processes, on SQLite and PostgreSQL.

The database goes away for a while (PostgreSQL: a TCP proxy of the test's own between the
gateway and the server is switched off; SQLite: another connection holds the file's write lock),
the queue overflows, the gateway is sent SIGTERM under load. Calls never fail because of the
capture, and nothing acknowledged that fits in the queue is lost.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from tests.capture_support import (
    BACKENDS,
    ENV,
    Backend,
    BackendKind,
    SwitchableProxy,
    capture_config,
    capture_counter,
    chat,
    feedback_post,
    gateway_sdk,
    open_backend,
    poll,
    rows_of,
    sqlite_locked,
)
from tests.processes import Running, start_gateway

OUTAGE_CALLS = 20
OVERFLOW_CALLS = 40
LOAD_THREADS = 8
LOAD_SECONDS = 1.0
SLOW_UPSTREAM = {"x-sim-ttft-ms": "20", "x-sim-token-ms": "3"}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path_factory.mktemp(f"capture-resilience-{kind}"), __name__) as b:
        yield b


@dataclass
class Target:
    """A fresh capture database: the gateway's URL for it, the test's own, and a way to make it
    unavailable to the gateway for the length of a ``with`` block."""

    kind: BackendKind
    gateway_url: str
    reader_url: str
    outage: Callable[[], AbstractContextManager[None]]


@contextmanager
def capture_target(backend: Backend) -> Iterator[Target]:
    database = backend.new_database()
    if backend.kind == "sqlite":
        url = backend.url(database)
        yield Target("sqlite", url, url, lambda: sqlite_locked(database))
        return
    proxy = SwitchableProxy()

    @contextmanager
    def unreachable() -> Iterator[None]:
        proxy.off()
        try:
            yield
        finally:
            proxy.on()

    try:
        yield Target(
            "postgresql", backend.url(database, proxy.port), backend.url(database), unreachable
        )
    finally:
        proxy.close()


@contextmanager
def gateway_on(
    backend: Backend, target: Target, simulator: Running, **capture: Any
) -> Iterator[Running]:
    config = capture_config(simulator.url, target.gateway_url, **capture)
    running = start_gateway(backend.workdir, config, env=ENV)
    try:
        yield running
    finally:
        running.stop()


def test_an_unreachable_database_loses_nothing_that_fits_in_the_queue(
    backend: Backend, simulator: Running
) -> None:
    with (
        capture_target(backend) as target,
        gateway_on(backend, target, simulator) as gw,
        rows_of(target.reader_url) as rows,
    ):
        sdk = gateway_sdk(gw.url)
        rows.wait_for_call(chat(sdk))  # the gateway writes through the proxy

        with target.outage():
            ids = [chat(sdk, stream=i % 2 == 1) for i in range(OUTAGE_CALLS)]
            if target.kind == "postgresql":
                poll(
                    lambda: capture_counter(gw.url, "retried") > 0,
                    "the writer to retry a batch against the unreachable database",
                )
            assert rows.ids(ids) == set()

        rows.wait_for_ids(ids)
        assert capture_counter(gw.url, "dropped") == 0
        assert capture_counter(gw.url, "failed") == 0


def test_a_full_queue_drops_and_counts_without_failing_calls(
    backend: Backend, simulator: Running
) -> None:
    with (
        capture_target(backend) as target,
        gateway_on(backend, target, simulator, queue_size=5, batch_size=5) as gw,
        rows_of(target.reader_url) as rows,
    ):
        sdk = gateway_sdk(gw.url)
        rows.wait_for_call(chat(sdk))

        with target.outage():
            # chat() raises unless the call was answered 200 in full
            ids = [chat(sdk, stream=i % 3 == 0) for i in range(OVERFLOW_CALLS)]
            dropped = int(capture_counter(gw.url, "dropped"))

        assert dropped > 0
        assert "capture record dropped: the queue is full" in gw.log.read_text()
        # What was not dropped is all written once the database is back; nothing else is lost.
        poll(
            lambda: len(rows.ids(ids)) == OVERFLOW_CALLS - dropped,
            f"{OVERFLOW_CALLS - dropped} rows (the calls not dropped)",
        )
        assert capture_counter(gw.url, "dropped") == dropped
        assert capture_counter(gw.url, "failed") == 0


def test_sigterm_under_load_loses_no_acknowledged_call(
    backend: Backend, simulator: Running
) -> None:
    url = backend.new_url()
    config = capture_config(simulator.url, url)
    gw = start_gateway(backend.workdir, config, env=ENV)
    acknowledged: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        sdk = gateway_sdk(gw.url)
        turn = 0
        while not stop.is_set():
            turn += 1
            try:
                request_id = chat(sdk, stream=(worker + turn) % 2 == 0, headers=SLOW_UPSTREAM)
            except openai.APIError as exc:
                errors.append(type(exc).__name__)
                time.sleep(0.02)
                continue
            acknowledged.append(request_id)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    try:
        poll(lambda: len(acknowledged) >= 20, "the load to get going")
        time.sleep(LOAD_SECONDS)
        gw.process.send_signal(signal.SIGTERM)
        try:
            returncode = gw.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the gateway did not exit within 60 s of SIGTERM:\n{gw.log.read_text()}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        gw.stop()

    log = gw.log.read_text()
    # uvicorn re-raises the signal once it has shut down cleanly: exit by SIGTERM is normal.
    assert returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert "not written" not in log and "could not be written" not in log
    assert len(acknowledged) >= 20
    with rows_of(url) as rows:
        missing = set(acknowledged) - rows.ids(acknowledged)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged calls not stored"


def test_feedback_while_the_database_is_down_fails_in_openai_shape(
    simulator: Running, tmp_path: Path
) -> None:
    # PostgreSQL only: a locked SQLite file is waited for (busy timeout, 5 s) before failing.
    with (
        open_backend("postgresql", tmp_path, __name__ + "_feedback") as backend,
        capture_target(backend) as target,
        gateway_on(backend, target, simulator) as gw,
        rows_of(target.reader_url) as rows,
    ):
        request_id = chat(gateway_sdk(gw.url))
        rows.wait_for_call(request_id)
        with target.outage():
            response = feedback_post(gw.url, {"request_id": request_id, "score": 1})

        assert response.status_code >= 500
        assert response.headers["content-type"].startswith("application/json"), response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}


def test_a_killed_gateway_s_writer_still_stores_what_it_was_sent(
    backend: Backend, simulator: Running
) -> None:
    """The writer is a process of its own (capture.writer_process): when the gateway dies
    without a drain (SIGKILL, the OOM killer), the writer stores what it holds and exits."""
    url = backend.new_url()
    # Batches that would wait a minute: only the writer's own drain writes these.
    config = capture_config(simulator.url, url, flush_interval_ms=60_000, batch_size=1000)
    gw = start_gateway(backend.workdir, config, env=ENV)
    try:
        writers = psutil.Process(gw.process.pid).children()
        assert [w.cmdline()[-2] for w in writers] == ["capture.writer_main"]
        sdk = gateway_sdk(gw.url)
        acknowledged = [chat(sdk, stream=turn % 2 == 0) for turn in range(30)]
        time.sleep(0.5)  # records are sent to the writer every 10 ms
        gw.process.kill()
        gw.process.wait(timeout=10)
        writer = writers[0]
        writer.wait(timeout=30)  # it exits once it has written what it holds
    finally:
        gw.stop()
    with rows_of(url) as rows:
        missing = set(acknowledged) - rows.ids(acknowledged)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged calls not stored"
    assert "the gateway went away; writing the 30 records held" in gw.log.read_text()
