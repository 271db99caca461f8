"""What a simulated fine-tuning job computes: file checks, "auto" hyperparameters, and loss
curves that look like real ones.

Curves: the training loss falls from about 1.6 towards a floor of about 0.35 within the first
epoch or two, with noise that shrinks as the batch grows (a step averages more examples); the
token accuracy mirrors it. The validation loss, measured every few steps, follows the same
fall a little higher, then rises again when the run goes past about three epochs on a small
set (overfitting), as real runs do. Seeded by the job's seed: the same job, the same curve.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.tokens import count_prompt

MIN_EXAMPLES = 10


class FileProblem(ValueError):
    """Why a training or validation file is refused (OpenAI's wording where it has one)."""


@dataclass(frozen=True, slots=True)
class Dataset:
    examples: int
    tokens: int


def read_dataset(content: bytes, kind: str, role: str) -> Dataset:
    """Count and check a JSONL file: chat rows (``messages``) or preference rows (``input``)."""
    examples = 0
    tokens = 0
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise FileProblem(f"Invalid file format. Line {number} is not valid JSON.") from None
        if kind == "dpo":
            given = row.get("input") if isinstance(row, dict) else None
            messages = given.get("messages") if isinstance(given, dict) else None
            preferred = row.get("preferred_output") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not isinstance(preferred, list):
                raise FileProblem(f"Invalid file format. Line {number}: expected preference data.")
            messages = [*messages, *preferred]
        else:
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not messages:
                raise FileProblem(f'Invalid file format. Line {number}, key "messages": missing.')
            if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
                raise FileProblem(f"Invalid file format. Line {number}: no assistant message.")
        examples += 1
        tokens += count_prompt(messages, row.get("tools") if isinstance(row, dict) else None)
    if role == "training" and examples < MIN_EXAMPLES:
        raise FileProblem(
            f"Training file has {examples} example(s), "
            f"but must have at least {MIN_EXAMPLES} examples"
        )
    return Dataset(examples, tokens)


def auto_hyperparameters(given: dict[str, Any], examples: int) -> dict[str, Any]:
    """Resolve ``"auto"`` (or absent) values the way the data-prep guide describes."""
    epochs = given.get("n_epochs", "auto")
    if not isinstance(epochs, int):
        epochs = 3
        if examples * 3 < 100:
            epochs = min(25, 100 // max(examples, 1))
        elif examples * 3 > 25_000:
            epochs = max(1, 25_000 // examples)
    batch = given.get("batch_size", "auto")
    if not isinstance(batch, int):
        batch = max(1, min(256, round(examples * 0.002)))
    rate = given.get("learning_rate_multiplier", "auto")
    if not isinstance(rate, int | float):
        rate = 0.05 if batch < 8 else 0.1 if batch < 64 else 0.2
    return {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": float(rate)}


@dataclass(frozen=True, slots=True)
class Step:
    step: int
    train_loss: float
    train_accuracy: float
    valid_loss: float | None
    valid_accuracy: float | None

    def data(self, total_steps: int) -> dict[str, Any]:
        data: dict[str, Any] = {
            "step": self.step,
            "train_loss": self.train_loss,
            "train_mean_token_accuracy": self.train_accuracy,
            "total_steps": total_steps,
        }
        if self.valid_loss is not None:
            data["valid_loss"] = self.valid_loss
            data["valid_mean_token_accuracy"] = self.valid_accuracy
        return data


def curve(
    examples: int, valid_examples: int, hyperparameters: dict[str, Any], seed: int
) -> list[Step]:
    epochs = int(hyperparameters["n_epochs"])
    batch = int(hyperparameters["batch_size"])
    rate = float(hyperparameters["learning_rate_multiplier"])
    per_epoch = max(1, math.ceil(examples / batch))
    total = per_epoch * epochs
    rng = random.Random(seed)
    start, floor = 1.6 + rng.uniform(-0.2, 0.2), 0.35 + rng.uniform(-0.08, 0.08)
    speed = 1.5 * min(4.0, max(0.25, rate / 0.1)) ** 0.5
    noise = 0.25 / math.sqrt(batch)
    valid_every = max(1, total // 20)
    overfit = max(0.0, 1.0 - examples / 500) * 0.08
    steps: list[Step] = []
    for step in range(1, total + 1):
        epoch = step / per_epoch
        mean = floor + (start - floor) * math.exp(-speed * epoch)
        loss = max(0.02, mean * (1 + rng.gauss(0, noise)))
        valid_loss: float | None = None
        valid_accuracy: float | None = None
        if valid_examples and (step % valid_every == 0 or step == total):
            rise = overfit * max(0.0, epoch - 2.5) ** 2
            valid_loss = round(max(0.02, (mean + 0.06 + rise) * (1 + rng.gauss(0, noise / 3))), 4)
            valid_accuracy = round(_accuracy(valid_loss), 4)
        steps.append(
            Step(step, round(loss, 4), round(_accuracy(loss), 4), valid_loss, valid_accuracy)
        )
    return steps


def _accuracy(loss: float) -> float:
    return min(0.99, max(0.3, 1.0 - 0.55 * loss / (1.0 + 0.3 * loss)))


def results_csv(steps: list[Step]) -> bytes:
    """OpenAI's result file: one row per step."""
    lines = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"]
    for s in steps:
        valid = "" if s.valid_loss is None else str(s.valid_loss)
        accuracy = "" if s.valid_accuracy is None else str(s.valid_accuracy)
        lines.append(f"{s.step},{s.train_loss},{s.train_accuracy},{valid},{accuracy}")
    return ("\n".join(lines) + "\n").encode()
