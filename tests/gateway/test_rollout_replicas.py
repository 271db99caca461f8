"""Two replicas sharing Redis and the store: one decides, an abort asked through the CLI on the
other returns traffic to the incumbent on both within seconds (scenario (e) of issue 14)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.capture_support import Backend, open_backend
from tests.gateway.rollout_support import (
    Load,
    cli,
    gateway_config,
    rollout,
    share_of,
    wait_until,
    weights,
)
from tests.gateway.test_limits import needs_redis
from tests.processes import Running, start_gateway, start_simulator

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("postgresql", tmp_path, "rollout_replicas") as opened:
        yield opened


def _decided(gateway: Running, action: str) -> int:
    pattern = re.compile(rf"rollout support slice \S+: {action} ")
    return len(pattern.findall(gateway.log.read_text()))


def _metric(gateway: Running, action: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    found = re.search(
        r'^gateway_rollout_decisions_total\{route="support",slice="\*",action="'
        + action
        + r'"\}\s+(\S+)$',
        text,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


@needs_redis
def test_an_abort_on_one_replica_returns_both_to_the_incumbent_and_one_decides(
    tmp_path: Path, postgres: Backend
) -> None:
    simulator = start_simulator(tmp_path)
    config = gateway_config(
        simulator.url, postgres.new_url(), redis_prefix=f"test-{uuid.uuid4().hex}"
    )
    replicas = [start_gateway(tmp_path, config), start_gateway(tmp_path, config)]
    first, second = replicas
    try:
        started = cli(
            "start", "support", "--candidate", "student", "--stages", "0.5",
            "--target", "0.9", "--holdout", "0.1", "--shadow-sample", "1", "--delta", "0.15",
            "--error-margin", "0.2", "--min-samples", "20", "--min-dwell-s", "30",
            "--admin", second.url,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert "support: running  teacher -> student" in started.stdout
        again = cli("start", "support", "--candidate", "student", "--admin", first.url)
        assert again.returncode == 2 and "409" in again.stderr and "running" in again.stderr

        with Load(replicas) as load:

            def live_on_both() -> bool:
                return all(share_of(weights(g), "student") == 0.5 for g in replicas)

            wait_until(live_on_both, "the student live on both replicas", logs=tuple(replicas))
            described = rollout(first)
            assert described is not None
            holder = described["holder"]
            deciding = next(g for g in replicas if f"-{g.process.pid}-" in holder)
            other = second if deciding is first else first
            aborted = cli("abort", "support", "--reason", "bad reviews", "--admin", other.url)
            asked = time.monotonic()
            assert aborted.returncode == 0, aborted.stderr + other.log.read_text()[-3000:]
            assert "abort requested: bad reviews" in aborted.stdout

            def incumbent_on_both() -> bool:
                return all(share_of(weights(g), "student") == 0.0 for g in replicas)

            wait_until(incumbent_on_both, "the incumbent back on both", timeout=10)
            took = time.monotonic() - asked
            time.sleep(1.0)  # a few more looks: nothing more is decided
        assert took < 5.0
        assert not load.failed

        status = cli("status", "support", "--admin", other.url)
        assert status.returncode == 0, status.stderr
        assert "support: aborted" in status.stdout
        assert "aborted: bad reviews" in status.stdout
        done = rollout(other)
        assert done is not None and done["abort_requested"] is None
        assert [d["action"] for d in done["decisions"]].count("abort") == 1
        # exactly one replica decided, every decision
        assert _decided(deciding, "abort") == 1 and _decided(other, "abort") == 0
        assert _decided(deciding, "start") == 1 and _decided(other, "start") == 0
        assert _metric(deciding, "abort") == 1.0 and _metric(other, "abort") == 0.0
        listed = cli("status", "--admin", first.url)
        assert listed.returncode == 0 and "support: aborted" in listed.stdout
    finally:
        for g in replicas:
            g.stop()
        simulator.stop()
