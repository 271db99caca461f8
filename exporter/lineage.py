"""A student's lineage and price, as ``gateway register`` stores them (capture.students).

Lineage: the backend and job that trained it, its base model, the student it continued from,
the hyperparameters, and the export it was trained on (the export's manifest: filters and time
window, counts, split; the sha256 of train.jsonl and valid.jsonl), read from the job's record
(``DIR/jobs/JOB/job.json``, written by ``gateway finetune``).

Price: open-weight students are priced by the registering team, per 1M tokens (``--price
IN,OUT``), or from what serving them costs: a GPU-hour's price and the measured throughput
(``--gpu-hour-usd X --tokens-per-s Y``: X / (Y * 3600) * 1e6 USD per 1M tokens, for input and
output alike unless ``--price`` gives input apart). It is written to the config's
``capture.prices`` so every cost comparison uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exporter.errors import BadFilter
from exporter.finetune.loop import job_dir


@dataclass(frozen=True, slots=True)
class StudentPrice:
    input: float
    output: float
    source: str
    """``given`` (per 1M tokens) or ``gpu_hour`` (derived)."""
    gpu_hour_usd: float | None = None
    tokens_per_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "output": self.output, "source": self.source}
        if self.source == "gpu_hour":
            out["gpu_hour_usd"] = self.gpu_hour_usd
            out["tokens_per_s"] = self.tokens_per_s
        return out


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadFilter(f"{what}: {text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise BadFilter(f"{what}: must be a finite number, 0 or more")
    return value


def student_price(
    price: str | None, gpu_hour_usd: float | None, tokens_per_s: float | None
) -> StudentPrice | None:
    """The price from ``--price IN,OUT`` and/or ``--gpu-hour-usd`` with ``--tokens-per-s``."""
    if (gpu_hour_usd is None) != (tokens_per_s is None):
        raise BadFilter("--gpu-hour-usd and --tokens-per-s go together (the price is their ratio)")
    given: tuple[float, float] | None = None
    if price is not None:
        parts = price.split(",")
        if len(parts) != 2:
            raise BadFilter(f"--price {price!r}: give INPUT,OUTPUT in USD per 1M tokens")
        given = (_positive(parts[0], "--price input"), _positive(parts[1], "--price output"))
    if gpu_hour_usd is not None and tokens_per_s is not None:
        hour = _positive(str(gpu_hour_usd), "--gpu-hour-usd")
        if not tokens_per_s > 0:
            raise BadFilter("--tokens-per-s: the measured throughput must be more than 0")
        per_million = round(hour / (tokens_per_s * 3600.0) * 1e6, 6)
        input_price = given[0] if given is not None else per_million
        return StudentPrice(input_price, per_million, "gpu_hour", hour, tokens_per_s)
    if given is not None:
        return StudentPrice(given[0], given[1], "given")
    return None


def job_record(data_dir: Path, job_id: str) -> dict[str, Any] | None:
    """The job's record as ``gateway finetune`` saved it, or None."""
    path = job_dir(data_dir, job_id) / "job.json"
    if not path.is_file():
        return None
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def lineage_of(record: dict[str, Any] | None, model: str) -> dict[str, Any]:
    """What made ``model``, from its job's record (what is known without one: the name)."""
    if record is None:
        return {"model": model, "job": None}
    job = record.get("job") if isinstance(record.get("job"), dict) else {}
    spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    assert isinstance(job, dict) and isinstance(spec, dict)
    return {
        "model": model,
        "backend": record.get("backend"),
        "job": job.get("id"),
        "base_model": spec.get("base_model") or job.get("model"),
        "parent": spec.get("parent"),
        "method": spec.get("method"),
        "hyperparameters": job.get("hyperparameters") or spec.get("hyperparameters"),
        "trained_tokens": job.get("trained_tokens"),
        "export": record.get("export"),
    }


def describe(student: dict[str, Any]) -> list[str]:
    """A registered student's lineage as lines of text, for ``gateway eval`` and the CLI."""
    lineage = student.get("lineage") or {}
    lines = [
        f"{student.get('route')}/{student.get('variant')}: {student.get('model')}"
        f" (registered {str(student.get('created_at'))[:19]})"
    ]
    if student.get("backend") or student.get("job_id"):
        lines.append(
            f"  trained by {student.get('backend') or '?'} job {student.get('job_id') or '?'}"
            f" on {student.get('base_model') or '?'}"
            + (f", continued from {student['parent_model']}" if student.get("parent_model") else "")
        )
    hyper = lineage.get("hyperparameters")
    if hyper:
        lines.append(f"  hyperparameters: {orjson.dumps(hyper).decode()}")
    export = lineage.get("export") or {}
    manifest = export.get("manifest") or {}
    if manifest:
        filters = manifest.get("filters") or {}
        window = f"{filters.get('since') or 'the start'} .. {filters.get('until') or 'now'}"
        counts = manifest.get("counts") or {}
        lines.append(
            f"  data: route {filters.get('route') or 'any'}, variant "
            f"{filters.get('variant') or 'any'}, {window}; {counts.get('train', '?')} train / "
            f"{counts.get('valid', '?')} valid rows"
        )
    if export.get("train_sha256"):
        lines.append(f"  train.jsonl sha256 {export['train_sha256']}")
    price = lineage.get("price")
    if price:
        lines.append(
            f"  price: {price['input']:g} in / {price['output']:g} out USD per 1M tokens"
            f" ({price['source']})"
        )
    return lines
