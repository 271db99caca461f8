"""Validating a JSONL file as it stands: ``gateway validate FILE``, and the check ``finetune``
runs before uploading anything.

Every line is parsed and checked (chat rows, or preference rows when the first row has
``input``), counted in tokens against the base model's limit, and reported with the line
numbers of a few offenders per problem. Lines are read one at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from exporter import hyperparams, report
from exporter.errors import InvalidDataset
from exporter.tokens import counter_for
from exporter.validate import check_chat_row, check_preference_row


def _messages_of(row: dict[str, Any], preference: bool) -> tuple[list[Any], Any]:
    if preference:
        given = row["input"]
        return [*given["messages"], *row["preferred_output"]], given.get("tools")
    return row["messages"], row.get("tools")


def validate_file(
    path: Path,
    base_model: str = "gpt-4o-mini",
    token_limit: int | None = None,
    training_price: float | None = None,
    side: str = "train",
    tokenizer: Path | None = None,
) -> dict[str, Any]:
    """The report of one file (its rows counted as ``side``); InvalidDataset if unreadable.

    Tokens are counted for ``base_model`` (``tokens.counter_for``): with ``tokenizer`` (a
    directory with tokenizer.json), or the base model's own directory, its own tokenizer and
    chat template; else its encoding or its family's approximation."""
    counter = counter_for(base_model, tokenizer)
    limit = token_limit or counter.token_limit(base_model)
    tally = report.Tally()
    preference: bool | None = None
    rows = 0
    try:
        with path.open("rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                rows += 1
                where = f"line {number}"
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    tally.problem({"invalid_json"}, where)
                    tally.drop("invalid row")
                    continue
                if preference is None:
                    preference = isinstance(row, dict) and "input" in row
                problems = check_preference_row(row) if preference else check_chat_row(row)
                if problems:
                    tally.problem(problems, where)
                    tally.drop("invalid row")
                    continue
                messages, tools = _messages_of(row, preference)
                counted = counter.example(messages, tools)
                if counted.total > limit:
                    tally.too_long(where)
                    tally.problem({"too_many_tokens"}, where)
                tally.count(side, counted.total, counted.assistant, limit)
    except OSError as exc:
        raise InvalidDataset(f"cannot read {path}: {exc.strerror or exc}") from None
    price = training_price if training_price is not None else hyperparams.training_price(base_model)
    built = report.build(
        tally,
        base_model=base_model,
        encoding=counter.encoding,
        token_limit=limit,
        training_price=price,
        selected=rows,
        counter=counter,
    )
    built["file"] = str(path)
    built["format"] = "preference" if preference else "chat"
    if side != "train":  # no minimum count: what the destination does not take still counts
        built["errors"] = counter.findings()[0]
        built["warnings"] = [w for w in built["warnings"] if "validation" not in w]
    if tally.problems:
        bad = sum(tally.dropped.values()) + tally.over_limit_count
        built["errors"].append(f"{bad} row(s) of {path.name} would be refused or truncated")
    return built
