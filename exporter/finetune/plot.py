"""Loss curves to a PNG, with a short guide to reading them.

Top: training loss per step (faint) and its moving average (solid), validation loss (dots and
line). Bottom: mean token accuracy. Drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.finetune.backend import MetricPoint

READING_GUIDE = """\
How to read the loss curves
- Training loss falls fast in the first epoch, then flattens: the model has learned what the
  data teaches. Where it flattens matters less than whether the validation loss follows.
- A noisy (jagged) training loss is normal with small batches: each step sees a few examples.
  Read the moving average. Very noisy and not falling: raise the batch size.
- A flat curve from the start: little is being learned. Raise the learning-rate multiplier,
  or check the data: if the base model already answers like the teacher, there is little to
  learn (then the saving is in a shorter prompt, not in the answers).
- Validation loss that rises while training loss keeps falling: overfitting, the model is
  memorising the training set. Train 1-2 epochs fewer, add more (and more varied) examples,
  or use the checkpoint from before the rise.
- Training loss near 0: memorised. Expect less varied answers; lower the epochs.
- Validation loss well above training loss from the start: the validation prompts differ
  from the training ones, or there are too few of them to say much.
- Token accuracy mirrors the loss; a loss is what the job optimises, so read that first.
"""


def moving_average(values: Sequence[float], window: int) -> list[float]:
    averaged: list[float] = []
    total = 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def draw(points: Sequence[MetricPoint], target: Path, title: str) -> Path:
    """Draw the curves of ``points`` to ``target`` (a PNG); returns ``target``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(p.step, p.train_loss) for p in points if p.train_loss is not None]
    valid = [(p.step, p.valid_loss) for p in points if p.valid_loss is not None]
    train_acc = [(p.step, p.train_accuracy) for p in points if p.train_accuracy is not None]
    valid_acc = [(p.step, p.valid_accuracy) for p in points if p.valid_accuracy is not None]
    accuracy_axes: Any = None
    if train_acc or valid_acc:
        figure, (loss_axes, accuracy_axes) = plt.subplots(
            2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
        )
    else:  # a service that reports losses only (Fireworks, Together): no empty panel
        figure, loss_axes = plt.subplots(1, 1, figsize=(9, 4.5))
        loss_axes.set_xlabel("step")
    if train:
        steps, losses = zip(*train, strict=True)
        window = max(1, len(losses) // 20)
        loss_axes.plot(
            steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="training loss"
        )
        loss_axes.plot(
            steps,
            moving_average(losses, window),
            color="tab:blue",
            linewidth=2,
            label=f"training loss, moving average of {window}",
        )
    if valid:
        steps, losses = zip(*valid, strict=True)
        loss_axes.plot(
            steps, losses, "o-", color="tab:orange", markersize=3, label="validation loss"
        )
    loss_axes.set_ylabel("loss")
    if len(title) > 90 and " -> " in title:  # long model names (accounts/.../models/...)
        title = title.replace(" -> ", "\n-> ", 1)
    loss_axes.set_title(title, fontsize=10 if "\n" in title else None)
    loss_axes.grid(alpha=0.3)
    loss_axes.legend(loc="upper right")
    if accuracy_axes is None:
        figure.tight_layout()
        figure.savefig(target, dpi=110)
        plt.close(figure)
        return target
    if train_acc:
        steps, values = zip(*train_acc, strict=True)
        accuracy_axes.plot(
            steps, values, color="tab:blue", alpha=0.5, linewidth=0.8, label="training"
        )
    if valid_acc:
        steps, values = zip(*valid_acc, strict=True)
        accuracy_axes.plot(
            steps, values, "o-", color="tab:orange", markersize=3, label="validation"
        )
    accuracy_axes.set_ylabel("mean token accuracy")
    accuracy_axes.set_xlabel("step")
    accuracy_axes.grid(alpha=0.3)
    if train_acc or valid_acc:
        accuracy_axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
