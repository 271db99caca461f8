"""What one local run trains: the job's ``config.json`` read into a ``Plan``, completed with
the defaults (LoRA's usual learning rate, or an export's learning-rate multiplier scaled into
LoRA's range; epochs, batch size, rank, targets, max length), and the device it trains on:
CUDA when present (bf16 where the GPU supports it, else fp16), else Apple's MPS, else the CPU
(fp32); ``device`` in the config forces one."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import InvalidDataset

DEFAULT_LEARNING_RATE = 2e-4
"""LoRA's usual rate, used when neither a learning rate nor a multiplier is given."""
MULTIPLIER_SCALE = 2e-3
"""An export's learning-rate multiplier (OpenAI's 0.05 / 0.1 / 0.2) times this: 1e-4, 2e-4 and
4e-4, the range LoRA is usually trained in."""
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 4
DEFAULT_LORA_R = 16
DEFAULT_MAX_LENGTH = 4096
DEFAULT_DPO_BETA = 0.1


@dataclass(frozen=True, slots=True)
class Device:
    type: str
    """cuda, mps or cpu."""
    precision: str
    """bf16, fp16 or fp32."""
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "precision": self.precision, "name": self.name}


def pick_device(requested: str | None = None) -> Device:
    import torch

    wanted = (requested or "auto").lower()
    if wanted not in ("auto", "cuda", "mps", "cpu"):
        raise InvalidDataset(f"device {requested!r}: give auto, cuda, mps or cpu")
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Device("cuda", precision, torch.cuda.get_device_name(0))
    if wanted == "cuda":
        raise InvalidDataset("device cuda: no CUDA GPU is visible to torch")
    if wanted in ("auto", "mps") and torch.backends.mps.is_available():
        return Device("mps", "fp32", "Apple MPS")
    if wanted == "mps":
        raise InvalidDataset("device mps: torch sees no MPS device")
    return Device("cpu", "fp32", platform.processor() or platform.machine())


def learning_rate(config: dict[str, Any]) -> float:
    options = config.get("options") or {}
    if options.get("learning_rate") is not None:
        return float(options["learning_rate"])
    multiplier = (config.get("hyperparameters") or {}).get("learning_rate_multiplier")
    if isinstance(multiplier, int | float):
        return float(multiplier) * MULTIPLIER_SCALE
    return DEFAULT_LEARNING_RATE


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


@dataclass(slots=True)
class Plan:
    """What one run trains: read from config.json, completed with the defaults."""

    run: Path
    method: str
    base_path: str
    parent: str | None
    train_file: Path
    valid_file: Path | None
    epochs: int
    batch_size: int
    learning_rate: float
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: str | list[str]
    max_length: int | None
    save_steps: int | None
    seed: int
    dpo_beta: float
    merge: bool
    device: Device
    extra: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "n_epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "lora_targets": self.lora_targets,
            "max_length": self.max_length,
            "seed": self.seed,
        }
        if self.method == "dpo":
            values["dpo_beta"] = self.dpo_beta
        return values


def plan_from(run: Path, config: dict[str, Any]) -> Plan:
    options = config.get("options") or {}
    hyper = config.get("hyperparameters") or {}
    r = _int(options.get("lora_r"), DEFAULT_LORA_R)
    targets = options.get("lora_targets") or "all-linear"
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return Plan(
        run=run,
        method=str(config.get("method") or "supervised"),
        base_path=str(config["base"]["path"]),
        parent=config.get("parent"),
        train_file=Path(config["training_file"]["copy"]),
        valid_file=(
            Path(config["validation_file"]["copy"]) if config.get("validation_file") else None
        ),
        epochs=_int(hyper.get("n_epochs"), DEFAULT_EPOCHS),
        batch_size=_int(hyper.get("batch_size"), DEFAULT_BATCH_SIZE),
        learning_rate=learning_rate(config),
        lora_r=r,
        lora_alpha=float(options.get("lora_alpha") or 2 * r),
        lora_dropout=float(options.get("lora_dropout") or 0.0),
        lora_targets=targets,
        max_length=_int(options.get("max_length"), 0) or None,
        save_steps=_int(options.get("save_steps"), 0) or None,
        seed=_int(config.get("seed"), 42),
        dpo_beta=float(options.get("dpo_beta") or DEFAULT_DPO_BETA),
        merge=bool(options.get("merge")),
        device=pick_device(options.get("device")),
    )
