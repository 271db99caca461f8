"""A local job's files, shared by the backend (the CLI's process) and the training process.

    RUNS_DIR/
      files/file-SHA.jsonl          uploaded files, copied (a job trains on what was uploaded,
      files/file-SHA.json           even after the export is written again); their sha256, rows
      JOB_ID/
        config.json                 what to train: the spec, the options, the files (written once)
        job.json                    the job as ``get`` shows it (status, model, pid, error, ...)
        events.jsonl                one JSON object a line, oldest first
        metrics.jsonl               per-step train loss (and valid loss at evaluation steps)
        train.log                   the training process's own output
        checkpoints/checkpoint-N/   the trainer's checkpoints (resume continues from the last)
        adapter/                    the LoRA adapter (adapter_config.json + weights)
        merged/                     with --merge: the base model with the adapter merged in
        manifest.json               base model, export, hyperparameters, device, versions
        .lock                       held (flock) by the training process while it runs

Nothing here imports torch: ``get``, ``events`` and ``metrics`` read files. Writes are atomic
(a temporary file renamed over the target), so a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

DEFAULT_RUNS_DIR = Path("finetune-runs")
CONFIG = "config.json"
JOB = "job.json"
EVENTS = "events.jsonl"
METRICS = "metrics.jsonl"
LOG = "train.log"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MERGED = "merged"
MANIFEST = "manifest.json"
LOCK = ".lock"


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: Any) -> None:
    """Atomically: a reader sees the old file or the new one."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every whole line; a line being written (no newline yet) or not JSON is skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    rows = []
    for line in data.split(b"\n")[:-1]:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            rows.append(value)
    return rows


def append_jsonl(path: Path, value: dict[str, Any]) -> None:
    """One line, written with one ``write`` on a file opened for appending."""
    with path.open("ab") as file:
        file.write(orjson.dumps(value) + b"\n")


def add_event(
    run: Path,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    now = time.time()
    event: dict[str, Any] = {
        "id": f"ev-{time.time_ns():x}-{os.getpid()}",
        "created_at": int(now),
        "level": level,
        "message": message,
        "type": type,
    }
    if data is not None:
        event["data"] = data
    append_jsonl(run / EVENTS, event)


def update_job(run: Path, **changes: Any) -> dict[str, Any]:
    """job.json with ``changes`` applied; the new value."""
    job = {**read_json(run / JOB), **changes}
    write_json(run / JOB, job)
    return job


def is_running(run: Path, pid: Any = None) -> bool:
    """Whether a training process holds the job's lock (it does for as long as it lives; the
    kernel drops the lock when the process ends, however it ends) and, given its pid, that
    process is alive (not a zombie, whose lock some kernels keep until it is reaped)."""
    if pid is not None and not pid_alive(pid):
        return False
    try:
        fd = os.open(run / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def hold_lock(run: Path) -> int:
    """The training process's lock on its job: held until the process ends (the fd stays
    open); OSError when another process holds it."""
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def pid_alive(pid: Any) -> bool:
    """Whether the process runs (a zombie does not; one that is this process's own child is
    reaped here, since some kernels keep a zombie's locks until then)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) is not alive
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """The trainer's complete checkpoints, by step, oldest first."""
    found = []
    for path in (run / CHECKPOINTS).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(step), path))
    return sorted(found)
