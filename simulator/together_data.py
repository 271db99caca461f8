"""What Together's servers compute about a fine-tuning file and a run: the semantic checks the
SDK leaves to the server (its ``check_file`` only parses lines), and the per-step metrics of a
simulated run.

Formats (Together's data-preparation guide), one per file, told apart by their keys:
``messages`` (CONVERSATION), ``prompt`` + ``completion`` (INSTRUCTION), ``text`` (GENERAL),
``input`` + ``preferred_output`` + ``non_preferred_output`` (PREFERENCE_OPENAI). A line with
keys of two formats, or of another format than the first line's, is refused. Conversations
start with ``system`` or ``user`` and alternate user and assistant afterwards (an assistant's
tool calls may be followed by ``tool`` messages, then the assistant again); a ``weight`` may
be 0 or 1 only.

Metrics: the rows ``GET /v1/fine-tunes/{id}/metrics`` lists, chronological, one per training
step (``train/loss``, ``train/learning_rate``, ``train/grad_norm``, ``train/epoch``,
``train/global_step``) and one per evaluation (``eval/loss`` with the step it ran at, as
``train/global_step``, which the SDK's own plot reads from every row). Steps are counted as
with packing off: examples per epoch over the batch size. The loss falls from about 1.6 (0.69
for DPO, whose loss starts at ln 2) towards a floor, faster with a higher learning rate and
noisier with a smaller batch; the evaluation loss follows it a little higher and rises again
past about three epochs on a small set. Seeded: the same job, the same curve.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulator.tokens import count_content, count_prompt, count_tokens

FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "CONVERSATION": ("messages",),
    "INSTRUCTION": ("prompt", "completion"),
    "GENERAL": ("text",),
    "PREFERENCE_OPENAI": ("input", "preferred_output", "non_preferred_output"),
}
ROLES = ("system", "user", "assistant", "tool")
GUIDE = "https://docs.together.ai/docs/fine-tuning-data-preparation"


class DataProblem(ValueError):
    """Why a file fails validation (the report's ``error``)."""


@dataclass(slots=True)
class Dataset:
    """What validation found in a valid file."""

    format: str
    examples: int = 0
    tokens: int = 0
    has_message_weights: bool = False
    has_tools: bool = False
    has_parallel_tool_calls: bool = False
    has_reasoning: bool = False

    def report(self, file_id: str) -> dict[str, Any]:
        return {
            "valid": True,
            "file_id": file_id,
            "dataset_format": self.format,
            "nlines": self.examples,
            "dataset_has_message_weights": self.has_message_weights,
            "dataset_has_tools": self.has_tools,
            "dataset_has_parallel_tool_calls": self.has_parallel_tool_calls,
            "dataset_has_reasoning": self.has_reasoning,
            "dataset_has_sample_weights": False,
            "dataset_is_multimodal": False,
        }


def invalid_report(file_id: str, problem: str) -> dict[str, Any]:
    return {"valid": False, "file_id": file_id, "error_type": "INVALID_FORMAT", "error": problem}


def _format_of(row: dict[str, Any], line: int) -> str:
    found = [name for name, keys in FORMAT_KEYS.items() if all(key in row for key in keys)]
    if len(found) != 1:
        keys = ", ".join(sorted(row)[:8]) or "none"
        what = "two possible formats" if found else "no known format"
        raise DataProblem(
            f"Error parsing file. Line {line} has {what} (its keys: {keys}); each line "
            f"needs exactly one of: messages; prompt and completion; text; input, "
            f"preferred_output and non_preferred_output. See {GUIDE}"
        )
    return found[0]


def _check_message(message: Any, line: int, dataset: Dataset) -> str:
    if not isinstance(message, dict):
        raise DataProblem(f"Invalid format on line {line}: each message must be an object.")
    role = message.get("role")
    if role not in ROLES:
        raise DataProblem(
            f"Invalid format on line {line}: invalid role {str(role)[:40]!r} in messages; "
            f"possible roles: {', '.join(ROLES)}."
        )
    content = message.get("content")
    calls = message.get("tool_calls")
    if role == "assistant" and calls is not None:
        if not isinstance(calls, list) or not calls:
            raise DataProblem(f"Invalid format on line {line}: tool_calls must be a list.")
        dataset.has_tools = True
        dataset.has_parallel_tool_calls |= len(calls) > 1
        if content is not None and not isinstance(content, str):
            raise DataProblem(f"Invalid format on line {line}: content must be a string.")
    elif not isinstance(content, str | list):
        raise DataProblem(
            f"Invalid format on line {line}: the {role} message has no string content."
        )
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            raise DataProblem(
                f"Invalid format on line {line}: weight must be 0 or 1 (found {str(weight)[:20]})."
            )
        dataset.has_message_weights = True
    if isinstance(message.get("reasoning"), str) or isinstance(
        message.get("reasoning_content"), str
    ):
        dataset.has_reasoning = True
    return str(role)


def _check_conversation(messages: Any, line: int, dataset: Dataset, final: bool) -> None:
    """A conversation: system or user first, then user and assistant in turn (tool messages
    after an assistant's tool calls); with ``final``, at least one assistant message."""
    if not isinstance(messages, list) or not messages:
        raise DataProblem(f"Invalid format on line {line}: messages must be a non-empty list.")
    previous: str | None = None
    for position, message in enumerate(messages):
        role = _check_message(message, line, dataset)
        if role == "system":
            if position != 0:
                raise DataProblem(
                    f"Invalid format on line {line}: a system message may only come first."
                )
        elif role == "tool":
            if previous not in ("assistant_calls", "tool"):
                raise DataProblem(
                    f"Invalid format on line {line}: a tool message must follow an assistant "
                    "message with tool_calls."
                )
        elif role == "user":
            if previous not in (None, "system", "assistant"):
                raise DataProblem(
                    f"Invalid format on line {line}: messages must alternate between user "
                    f"and assistant (message {position + 1} is a second user message in a row)."
                )
        elif previous not in ("user", "tool"):
            raise DataProblem(
                f"Invalid format on line {line}: messages must alternate between user and "
                f"assistant (message {position + 1} is an assistant message that answers no "
                "user message)."
            )
        if role == "assistant" and message.get("tool_calls"):
            role = "assistant_calls"
        previous = role
    if final and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        raise DataProblem(f"Invalid format on line {line}: no assistant message to train on.")


def _check_output(value: Any, key: str, line: int, dataset: Dataset) -> list[Any]:
    if (
        not isinstance(value, list)
        or len(value) != 1
        or not isinstance(value[0], dict)
        or value[0].get("role") != "assistant"
    ):
        raise DataProblem(
            f"Invalid format on line {line}: {key} must be a list of one assistant message."
        )
    _check_message(value[0], line, dataset)
    return value


def _check_row(row: dict[str, Any], kind: str, line: int, dataset: Dataset) -> int:
    """Check one row of format ``kind``; its tokens."""
    if kind == "CONVERSATION":
        _check_conversation(row["messages"], line, dataset, final=True)
        tools = row.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise DataProblem(f"Invalid format on line {line}: tools must be a list.")
            dataset.has_tools = True
        return count_prompt(row["messages"], tools)
    if kind == "PREFERENCE_OPENAI":
        given = row["input"]
        messages = given.get("messages") if isinstance(given, dict) else None
        _check_conversation(messages, line, dataset, final=False)
        assert isinstance(messages, list)
        if messages[-1].get("role") == "assistant":
            raise DataProblem(
                f"Invalid format on line {line}: input.messages must not end with the "
                "assistant's answer (it goes in preferred_output)."
            )
        chosen = _check_output(row["preferred_output"], "preferred_output", line, dataset)
        rejected = _check_output(row["non_preferred_output"], "non_preferred_output", line, dataset)
        return count_prompt([*messages, *chosen]) + count_content(rejected[0].get("content"))
    fields = FORMAT_KEYS[kind]
    for key in fields:
        if not isinstance(row[key], str) or not row[key]:
            raise DataProblem(f"Invalid format on line {line}: {key} must be a non-empty string.")
    return sum(count_tokens(row[key]) for key in fields)


def inspect_dataset(content: bytes) -> Dataset:
    """Validate a JSONL file as Together's server does; DataProblem with the first fault."""
    dataset: Dataset | None = None
    for line, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise DataProblem(
                f"Error parsing json payload. Unexpected format on line {line}."
            ) from None
        if not isinstance(row, dict):
            raise DataProblem(
                f"Error parsing file. Invalid format on line {line} of the input file. "
                "Each line must be a JSON object."
            )
        kind = _format_of(row, line)
        if dataset is None:
            dataset = Dataset(kind)
        elif kind != dataset.format:
            raise DataProblem(
                f"Error parsing file. Line {line} is in the {kind} format, but the file "
                f"started in the {dataset.format} format: one format per file."
            )
        dataset.tokens += _check_row(row, kind, line, dataset)
        dataset.examples += 1
    if dataset is None:
        raise DataProblem("File is empty: no examples.")
    return dataset


@dataclass(frozen=True, slots=True)
class Schedule:
    """How the learning rate moves: warmup, then cosine (with cycles) or linear decay."""

    peak: float
    kind: str = "cosine"
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    num_cycles: float = 0.5

    def at(self, step: int, total: int) -> float:
        warmup = int(total * self.warmup_ratio)
        if warmup and step <= warmup:
            return self.peak * step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        floor = self.peak * self.min_lr_ratio
        if self.kind == "linear":
            return floor + (self.peak - floor) * (1.0 - progress)
        wave = 0.5 * (1.0 + math.cos(math.pi * 2.0 * self.num_cycles * progress))
        return floor + (self.peak - floor) * wave


@dataclass(slots=True)
class Run:
    """A simulated run's shape: its steps, where epochs end, evaluations and checkpoints."""

    total_steps: int
    steps_per_epoch: int
    eval_steps: list[int]
    checkpoint_steps: list[int]
    rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """(step, metrics row), chronological."""


def evenly(count: int, total: int) -> list[int]:
    """``count`` steps spread over 1..total, the last one at ``total``."""
    if count <= 0 or total <= 0:
        return []
    return sorted({max(1, round(total * k / count)) for k in range(1, count + 1)})


def simulate(
    *,
    examples: int,
    epochs: int,
    batch: int,
    schedule: Schedule,
    n_evals: int,
    n_checkpoints: int,
    dpo: bool,
    seed: int,
) -> Run:
    per_epoch = max(1, math.ceil(examples / batch))
    total = per_epoch * epochs
    rng = random.Random(seed)
    if dpo:
        start, floor = math.log(2.0), 0.18 + rng.uniform(-0.04, 0.04)
    else:
        start, floor = 1.6 + rng.uniform(-0.2, 0.2), 0.35 + rng.uniform(-0.08, 0.08)
    speed = 1.5 * min(4.0, max(0.25, schedule.peak / 1e-5)) ** 0.5
    noise = 0.25 / math.sqrt(batch)
    overfit = max(0.0, 1.0 - examples / 500) * 0.08
    evals = set(evenly(n_evals, total))
    run = Run(total, per_epoch, sorted(evals), evenly(n_checkpoints, total)[:-1])
    for step in range(1, total + 1):
        epoch = step / per_epoch
        mean = floor + (start - floor) * math.exp(-speed * epoch)
        loss = max(0.01, mean * (1 + rng.gauss(0, noise)))
        grad = max(0.05, 1.2 * mean / start * (1 + rng.gauss(0, 0.15)))
        row = {
            "train/loss": round(loss, 4),
            "train/learning_rate": schedule.at(step, total),
            "train/grad_norm": round(grad, 4),
            "train/epoch": round(epoch, 4),
            "train/global_step": float(step),
        }
        run.rows.append((step, row))
        if step in evals:
            rise = overfit * max(0.0, epoch - 2.5) ** 2
            valid = max(0.01, (mean + 0.06 + rise) * (1 + rng.gauss(0, noise / 3)))
            run.rows.append(
                (
                    step,
                    {
                        "eval/loss": round(valid, 4),
                        "train/epoch": round(epoch, 4),
                        "train/global_step": float(step),
                    },
                )
            )
    return run
