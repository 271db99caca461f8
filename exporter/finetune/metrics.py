"""A job's metrics: saved as CSV, summed up, and read for the signs the guide describes."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.finetune.backend import MetricPoint
from exporter.finetune.plot import moving_average

NOISY = 0.15
"""Relative spread of the training loss around its moving average above which it is noisy."""
FLAT = 0.85
"""Final over initial training loss above which the curve is flat."""
RISING = 1.05
"""Last over lowest validation loss above which it is rising."""
RISING_EVALS = 3
"""Validation evaluations in a row, each higher than the one before, with the training loss
falling meanwhile, before the curves are called overfitting: one or two higher points are as
often noise (a validation loss from a few examples is noisy too)."""


def write_csv(points: Sequence[MetricPoint], target: Path) -> None:
    def cell(value: float | None) -> str:
        return "" if value is None else str(value)

    lines = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"]
    lines += [
        f"{p.step},{cell(p.train_loss)},{cell(p.train_accuracy)},"
        f"{cell(p.valid_loss)},{cell(p.valid_accuracy)}"
        for p in points
    ]
    target.write_text("\n".join(lines) + "\n")


def _tail_mean(values: Sequence[float]) -> float:
    tail = values[-max(1, len(values) // 10) :]
    return round(statistics.fmean(tail), 4)


def _rises_at_end(values: Sequence[float]) -> int:
    """How many of the last values were each higher than the one before."""
    rises = 0
    for index in range(len(values) - 1, 0, -1):
        if values[index] <= values[index - 1]:
            break
        rises += 1
    return rises


def summarize(points: Sequence[MetricPoint]) -> dict[str, Any]:
    """Final losses and accuracies, and what the curves show (``signs``)."""
    train = [p.train_loss for p in points if p.train_loss is not None]
    valid = [(p.step, p.valid_loss) for p in points if p.valid_loss is not None]
    accuracy = [p.train_accuracy for p in points if p.train_accuracy is not None]
    valid_accuracy = [p.valid_accuracy for p in points if p.valid_accuracy is not None]
    summary: dict[str, Any] = {"steps": max((p.step for p in points), default=0), "signs": []}
    signs: list[str] = summary["signs"]
    if train:
        head = statistics.fmean(train[: max(1, len(train) // 10)])
        summary["train_loss_first"] = round(head, 4)
        summary["train_loss_final"] = _tail_mean(train)
        if len(train) >= 10:
            smooth = moving_average(train, max(2, len(train) // 20))
            spread = statistics.fmean(
                abs(t - s) / max(s, 1e-6) for t, s in zip(train, smooth, strict=True)
            )
            summary["train_loss_noise"] = round(spread, 3)
            if spread > NOISY:
                signs.append(
                    "noisy training loss: read the moving average; a larger batch smooths it"
                )
        if summary["train_loss_final"] > FLAT * head:
            signs.append(
                "flat training loss: little learned; "
                "raise the learning-rate multiplier or check the data"
            )
        if summary["train_loss_final"] < 0.05:
            signs.append("training loss near 0: memorised; fewer epochs")
    if accuracy:
        summary["train_accuracy_final"] = _tail_mean(accuracy)
    if valid:
        lowest_step, lowest = min(valid, key=lambda item: item[1])
        last_step, last = valid[-1]
        summary.update(
            valid_loss_final=last, valid_loss_min=lowest, valid_loss_min_step=lowest_step
        )
        if last > RISING * lowest and last_step > lowest_step:
            rises = _rises_at_end([loss for _, loss in valid])
            start = valid[-rises - 1][0]
            span = [p.train_loss for p in points if p.train_loss is not None and p.step >= start]
            half = len(span) // 2
            train_falls = half == 0 or statistics.fmean(span[half:]) < statistics.fmean(span[:half])
            if rises >= RISING_EVALS and train_falls:
                signs.append(
                    f"validation loss rising over its last {rises} evaluations (from step "
                    f"{start}; lowest {lowest} at step {lowest_step}, now {last}) while the "
                    "training loss falls: overfitting; train 1-2 epochs fewer or add varied "
                    "examples"
                )
            else:
                signs.append(
                    f"validation loss ends at {last}, above its lowest ({lowest} at step "
                    f"{lowest_step}), but has not risen over {RISING_EVALS} evaluations in a "
                    "row: likely noise, not yet overfitting (watch it on the next run)"
                )
    if valid_accuracy:
        summary["valid_accuracy_final"] = valid_accuracy[-1]
    if not signs and train:
        signs.append(
            "healthy: the training loss fell and flattened"
            + (" and the validation loss followed" if valid else "")
        )
    return summary
