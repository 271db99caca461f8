"""Worker processes: a worker that dies fails the export with a clear error and writes
nothing; a small export starts none. (The tests make small exports start workers by setting
``INLINE_CALLS`` to 0, as a large export would.)"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil
import pytest

import exporter.workers
from exporter.cli import main
from exporter.errors import WorkerFailed
from exporter.workers import INLINE_CALLS
from tests.exporter.factory import chat_call, store_calls
from tests.exporter.helpers import export


def _rows(count: int) -> list[dict[str, object]]:
    return [
        chat_call(f"question {number} about plan {number % 7} and device {number % 11}", "ok")
        for number in range(count)
    ]


def _workers() -> list[psutil.Process]:
    """This process's worker processes (not multiprocessing's resource tracker)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_worker_killed_mid_export_fails_it_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter.workers, "INLINE_CALLS", 0)
    url = store_calls(tmp_path / "c.db", _rows(6000))
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for child in _workers():
                child.kill()
                killed.append(child.pid)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    with pytest.raises(WorkerFailed, match="worker process of the export died"):
        export(url, out, page_size=20, workers=2)
    killer.join()
    assert killed
    assert not list(out.glob("*.jsonl")) and not (out / "report.json").exists()
    assert not [child for child in _workers() if child.is_running()]


def test_an_export_of_a_few_thousand_calls_starts_no_worker(tmp_path: Path) -> None:
    url = store_calls(tmp_path / "c.db", _rows(INLINE_CALLS // 10))
    started: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            started.extend(child.pid for child in _workers())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = export(url, tmp_path / "out", page_size=10, workers=2)
    finally:
        done.set()
        watcher.join()
    assert result.report["selected"] == INLINE_CALLS // 10
    assert not started


def test_workers_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter.workers, "INLINE_CALLS", 0)
    url = store_calls(tmp_path / "c.db", _rows(400))
    base = ["export", "--database-url", url, "--page-size", "50", "--json"]
    assert main([*base, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert main([*base, "--out", str(tmp_path / "none"), "--workers", "0"]) == 0
    none = json.loads(capsys.readouterr().out)
    assert two["kept"] == none["kept"] > 300
    for name in ("train.jsonl", "valid.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "none" / name).read_bytes()
    assert main([*base, "--out", str(tmp_path / "bad"), "--workers", "-1"]) != 0
    assert "--workers must be between 0 and 64" in capsys.readouterr().err
