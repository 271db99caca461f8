"""The dataset report: what was kept and why the rest was dropped, token statistics, billed
tokens, the hyperparameters to start from and what training will cost. As a dict (written to
``report.json``, printed by ``--json``) and as text.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import hyperparams
from exporter.split import LARGE_GROUP_SHARE
from exporter.validate import CATEGORIES

if TYPE_CHECKING:
    from exporter.tokens import TokenCounter

SAMPLE_IDS = 3
"""Call ids (or line numbers) kept per problem, to go and look."""


def distribution(values: array[int]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    data = np.frombuffer(values, dtype=np.uint32) if values.typecode == "I" else np.array(values)
    p5, p50, p95 = np.percentile(data, [5, 50, 95])
    return {
        "count": len(data),
        "min": int(data.min()),
        "p5": round(float(p5), 1),
        "mean": round(float(data.mean()), 1),
        "median": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "max": int(data.max()),
    }


@dataclass
class Tally:
    """What an export or a validation saw, row by row."""

    dropped: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    problem_samples: dict[str, list[str]] = field(default_factory=dict)
    tokens: dict[str, array[int]] = field(
        default_factory=lambda: {"train": array("I"), "valid": array("I")}
    )
    assistant_tokens: array[int] = field(default_factory=lambda: array("I"))
    over_limit: list[str] = field(default_factory=list)
    over_limit_count: int = 0
    billed: int = 0
    """Tokens of the training file, each example capped at the limit."""

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def problem(self, categories: set[str], where: str) -> None:
        for category in categories:
            self.problems[category] += 1
            samples = self.problem_samples.setdefault(category, [])
            if len(samples) < SAMPLE_IDS:
                samples.append(where)

    def count(self, side: str, total: int, assistant: int, limit: int) -> None:
        self.tokens[side].append(min(total, 0xFFFFFFFF))
        self.assistant_tokens.append(min(assistant, 0xFFFFFFFF))
        if side == "train":
            self.billed += min(total, limit)

    def too_long(self, where: str) -> None:
        self.over_limit_count += 1
        if len(self.over_limit) < SAMPLE_IDS:
            self.over_limit.append(where)


def build(
    tally: Tally,
    *,
    base_model: str,
    encoding: str,
    token_limit: int,
    training_price: float | None,
    selected: int | None = None,
    split: dict[str, Any] | None = None,
    counter: TokenCounter | None = None,
) -> dict[str, Any]:
    """``split``: how the rows were split (``split.GroupSplit.summary``), None for a file;
    ``counter``: what counted the tokens, with what it saw the destination would not take."""
    train = len(tally.tokens["train"])
    valid = len(tally.tokens["valid"])
    suggestion = hyperparams.suggest(train)
    trained_tokens = tally.billed * suggestion.n_epochs
    errors: list[str] = []
    warnings: list[str] = []
    if train < hyperparams.MIN_EXAMPLES:
        errors.append(
            f"{train} training examples: the service needs at least {hyperparams.MIN_EXAMPLES}"
        )
    elif train < hyperparams.RECOMMENDED_EXAMPLES:
        warnings.append(
            f"{train} training examples: {hyperparams.RECOMMENDED_EXAMPLES}-100 good ones are "
            "where fine-tuning starts to pay off"
        )
    if valid == 0 and train:
        warnings.append("no validation examples: the valid loss cannot be followed")
    if split is not None:
        warnings += _split_warnings(split, train + valid)
    if counter is not None:
        found_errors, found_warnings = counter.findings()
        errors += found_errors
        warnings += found_warnings
    problems = {
        name: {
            "count": tally.problems[name],
            "meaning": CATEGORIES.get(name, ""),
            "examples": tally.problem_samples.get(name, []),
        }
        for name in sorted(tally.problems)
    }
    report: dict[str, Any] = {
        "base_model": base_model,
        "encoding": encoding,
        **({"tokenizer": counter.describe()} if counter is not None else {}),
        "token_limit": token_limit,
        "selected": selected,
        "dropped": dict(tally.dropped.most_common()),
        "kept": train + valid,
        "splits": {"train": train, "valid": valid},
        **({"split": split} if split is not None else {}),
        "problems": problems,
        "tokens": {
            "train": distribution(tally.tokens["train"]),
            "valid": distribution(tally.tokens["valid"]),
            "assistant": distribution(tally.assistant_tokens),
        },
        "over_limit": {"count": tally.over_limit_count, "examples": tally.over_limit},
        "billed_tokens": tally.billed,
        "hyperparameters": suggestion.as_dict(),
        "trained_tokens": trained_tokens,
        "training_price_per_1m": training_price,
        "prices_as_of": hyperparams.TRAINING_PRICES_AS_OF,
        "estimated_cost_usd": (
            round(trained_tokens * training_price / 1e6, 2) if training_price is not None else None
        ),
        "errors": errors,
        "warnings": warnings,
    }
    return report


def _split_warnings(split: dict[str, Any], kept: int) -> list[str]:
    warnings: list[str] = []
    largest = split.get("largest_group", 0)
    if kept >= 20 and largest > LARGE_GROUP_SHARE * kept:
        warnings.append(
            f"one group of similar prompts holds {largest:,} of the {kept:,} examples, all on "
            "one side (a shared template?): raise --split-group-threshold, or "
            "--no-split-groups"
        )
    if split.get("split_groups"):
        warnings.append(
            f"{split['split_groups']:,} group(s) of similar prompts have rows on both sides: a "
            "later prompt was similar to a train group and a valid group"
        )
    return warnings


def _split_line(split: dict[str, Any]) -> str | None:
    if split.get("group_threshold") is None:
        return None
    return (
        f"split by groups of similar prompts (word 3-gram Jaccard >= {split['group_threshold']}): "
        f"{_number(split['groups_merged'])} group(s) of 2 or more merged onto one side, "
        f"{_number(split['rows_moved'])} row(s) moved to their group's side"
    )


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if report.get("file") is not None:
        lines.append(f"{_number(report['selected'])} row(s) in {report['file']}")
    elif report.get("selected") is not None:
        lines.append(f"selected {_number(report['selected'])} call(s)")
    dropped = report.get("dropped") or {}
    if dropped:
        lines.append(f"dropped {_number(sum(dropped.values()))}:")
        width = max(len(reason) for reason in dropped)
        lines += [f"  {reason:<{width}}  {_number(n):>9}" for reason, n in dropped.items()]
    splits = report["splits"]
    lines.append(
        f"kept {_number(report['kept'])}: train {_number(splits['train'])}, "
        f"valid {_number(splits['valid'])}"
    )
    if (grouped := _split_line(report.get("split") or {})) is not None:
        lines.append(grouped)
    if report["problems"]:
        lines.append("validation problems (rows dropped or to fix):")
        for name, item in report["problems"].items():
            where = ", ".join(item["examples"])
            lines.append(f"  {name:<34} {item['count']:>7}  {item['meaning']} (e.g. {where})")
    side = "train" if splits["train"] or not splits["valid"] else "valid"
    tokens = report["tokens"][side]
    if tokens.get("count"):
        lines.append(
            f"tokens per {'training' if side == 'train' else 'validation'} example "
            f"({report['encoding']}): min {tokens['min']}, "
            f"p5 {tokens['p5']}, median {tokens['median']}, mean {tokens['mean']}, "
            f"p95 {tokens['p95']}, max {tokens['max']}"
        )
        answer = report["tokens"]["assistant"]
        lines.append(
            f"assistant tokens per example: median {answer['median']}, p95 {answer['p95']}, "
            f"max {answer['max']}"
        )
    tokenizer = report.get("tokenizer")
    if tokenizer is not None:
        lines.append(
            f"tokens counted for {tokenizer['destination']} with {tokenizer['method']}"
            + (" (the service counts its own)" if tokenizer["estimate"] else "")
        )
        if tokenizer.get("note"):
            lines.append(f"note: {tokenizer['note']}")
    over = report["over_limit"]
    lines.append(
        f"over the {_number(report['token_limit'])}-token limit of {report['base_model']}: "
        f"{over['count']}" + (f" (e.g. {', '.join(over['examples'])})" if over["examples"] else "")
    )
    if side == "valid":  # a validation file alone: nothing is trained on it
        return "\n".join(lines + [f"warning: {w}" for w in report["warnings"]])
    hp = report["hyperparameters"]
    lines.append(
        f"billed tokens in the training file (counted with {report['encoding']}; the validation "
        f"file is not billed): {_number(report['billed_tokens'])}; x {hp['n_epochs']} epochs = "
        f"{_number(report['trained_tokens'])} trained tokens (an estimate: the service counts "
        "its own)"
    )
    lines.append(
        f"start with: n_epochs {hp['n_epochs']}, batch_size {hp['batch_size']}, "
        f"learning_rate_multiplier {hp['learning_rate_multiplier']}"
    )
    price = report["training_price_per_1m"]
    if price is not None:
        lines.append(
            f"estimated training cost: ${report['estimated_cost_usd']:,.2f} "
            f"(${price}/1M training tokens, list price as of {report['prices_as_of']})"
        )
    else:
        lines.append(
            f"estimated training cost: unknown for {report['base_model']} (give --training-price)"
        )
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines += [f"error: {e}" for e in report["errors"]]
    return "\n".join(lines)
