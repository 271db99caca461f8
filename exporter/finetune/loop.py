"""The fine-tuning loop: check and upload an export, start the job, follow it, save its
metrics and loss curves.

A job's records go to ``DATA_DIR/jobs/JOB_ID/``: ``job.json`` (the job as the service last
described it), ``events.jsonl``, ``metrics.csv``, ``summary.json`` (final losses and what the
curves show), ``loss.png`` and ``READING.txt`` (how to read the curves).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from exporter.check_file import validate_file
from exporter.errors import BackendError, InvalidDataset
from exporter.finetune.backend import FineTuneBackend, Hyperparameters, Job, JobEvent, JobSpec
from exporter.finetune.metrics import summarize, write_csv
from exporter.finetune.plot import READING_GUIDE, draw
from exporter.output import prepare_directory, write_json

Say = Callable[[str], None]


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def suggested(data_dir: Path) -> Hyperparameters:
    """The export's suggested hyperparameters (its report.json), else the service's auto."""
    values = _read_json(data_dir / "report.json").get("hyperparameters") or {}
    return Hyperparameters(
        values.get("n_epochs"), values.get("batch_size"), values.get("learning_rate_multiplier")
    )


def start(
    backend: FineTuneBackend,
    data_dir: Path,
    base_model: str,
    hyperparameters: Hyperparameters | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    say: Say = print,
    parent: str | None = None,
    tokenizer: Path | None = None,
) -> Job:
    """Validate ``DATA_DIR/{train,valid}.jsonl``, upload them and create the job (continuing
    from ``parent``, the previous student, when given). The job's record (``job.json``) holds
    the spec, the backend and the export it was trained on: its manifest and the files'
    sha256, which ``register`` stores as the student's lineage."""
    train = data_dir / "train.jsonl"
    valid = data_dir / "valid.jsonl"
    if not train.is_file():
        raise InvalidDataset(f"no {train}: run `gateway export --out {data_dir}` first")
    checked = validate_file(train, base_model, tokenizer=tokenizer)
    if checked["errors"]:
        raise InvalidDataset(f"{train}: " + "; ".join(checked["errors"]))
    has_valid = valid.is_file() and valid.stat().st_size > 0
    if has_valid:
        valid_report = validate_file(valid, base_model, side="valid", tokenizer=tokenizer)
        if valid_report["errors"]:
            raise InvalidDataset(f"{valid}: " + "; ".join(valid_report["errors"]))
    method = "dpo" if checked["format"] == "preference" else "supervised"
    chosen = hyperparameters or suggested(data_dir)
    check_base = getattr(backend, "check_base", None)
    if callable(check_base):  # a backend that can tell a base it cannot train, before uploading
        check_base(base_model)
    say(f"uploading {train} ({checked['splits']['train']} examples)")
    training_file = backend.upload(train)
    validation_file = None
    if has_valid:
        say(f"uploading {valid}")
        validation_file = backend.upload(valid)
    spec = JobSpec(base_model, training_file, validation_file, chosen, method, suffix, seed, parent)
    job = backend.create(spec)
    start_from = f" (continuing from {parent})" if parent else ""
    say(
        f"created {job.id} on {backend.name}: {base_model}{start_from}, {method}, "
        f"{job.hyperparameters or chosen.as_dict()}"
    )
    target = prepare_directory(job_dir(data_dir, job.id))
    record = {
        "job": job.raw,
        "spec": asdict(spec),
        "backend": backend.name,
        "export": export_lineage(data_dir),
    }
    write_json(target / "job.json", record)
    return job


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_lineage(data_dir: Path) -> dict[str, Any]:
    """What a student is trained on: the export's directory, its manifest (filters and time
    window, counts, split, hyperparameters) and the sha256 of its files."""
    manifest = _read_json(data_dir / "manifest.json")
    return {
        "dir": str(data_dir.resolve()),
        "manifest": manifest or None,
        "train_sha256": _sha256(data_dir / "train.jsonl"),
        "valid_sha256": _sha256(data_dir / "valid.jsonl"),
    }


def follow(
    backend: FineTuneBackend,
    job_id: str,
    *,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    say: Say = print,
) -> Job:
    """Print the job's new events until it ends (or ``timeout_s``); the job as it is then."""
    seen: set[str] = set()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        job = backend.get(job_id)
        for event in backend.events(job_id):
            if event.id not in seen:
                seen.add(event.id)
                if event.type != "metrics" or _worth_saying(event):
                    clock = time.strftime("%H:%M:%S", time.localtime(event.created_at))
                    say(f"  {clock} {event.message}")
        if job.done:
            break
        if deadline is not None and time.monotonic() > deadline:
            say(
                f"{job.id} is still {job.status}; follow it with `gateway finetune status {job.id}`"
            )
            return job
        time.sleep(poll_s)
    return job


def _worth_saying(event: JobEvent) -> bool:
    """Metrics events come one per step: say about ten of them, evenly spread."""
    data = event.data or {}
    step, total = int(data.get("step", 0)), int(data.get("total_steps", 0))
    return total <= 0 or step == total or step % max(1, total // 10) == 0


def save(backend: FineTuneBackend, job: Job, target: Path) -> dict[str, Any]:
    """Write the job's records; the metrics summary."""
    prepare_directory(target)
    previous = _read_json(target / "job.json")
    write_json(target / "job.json", {**previous, "job": job.raw, "backend": backend.name})
    events = backend.events(job.id)
    lines = [orjson.dumps(asdict(event)) for event in events]
    (target / "events.jsonl").write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
    points = backend.metrics(job) if job.status == "succeeded" or events else []
    summary = summarize(points)
    summary.update(status=job.status, fine_tuned_model=job.fine_tuned_model, error=job.error)
    write_json(target / "summary.json", summary)
    (target / "READING.txt").write_text(READING_GUIDE)
    if points:
        write_csv(points, target / "metrics.csv")
        try:
            draw(
                points,
                target / "loss.png",
                f"{job.id}: {job.base_model} -> {job.fine_tuned_model or job.status}",
            )
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot draw the loss curves: {exc}") from None
        summary["plot"] = str(target / "loss.png")
    return summary
