"""Preference (DPO) data: pairs of answers to the same input, one judged better.

OpenAI's preference format, one row per pair::

    {"input": {"messages": [...], "tools": [...]},
     "preferred_output": [{"role": "assistant", ...}],
     "non_preferred_output": [{"role": "assistant", ...}]}

Two sources of pairs:

- ``feedback``: calls with the same input (messages and tools, after the system prompt
  treatment) and feedback whose mean scores differ by at least the margin: the best-scored
  answer is preferred to the worst-scored one. A first pass keeps, per input, only the ids and
  scores of its best and worst call; a second reads those calls back by id.
- ``shadow``: a call and its shadow copy (the same input sent to another variant), both with
  feedback (post it for the shadow call's id, e.g. from a reviewer) differing by at least the
  margin; or, with a judge (``pair_judge``), judged by an LLM through the gateway.

The leak check, validation, token limit and split apply as for chat rows; the split hashes the
input (and groups similar inputs, as ``split.GroupSplit`` says), so a pair's prompt is on one
side only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from exporter import report
from exporter.errors import InvalidDataset
from exporter.examples import Dropped, Example, example_from_call
from exporter.leaks import LeakCheck
from exporter.normalize import exact_key, prompt_key, prompt_text
from exporter.output import AtomicJsonl, prepare_directory
from exporter.pair_judge import PairJudge
from exporter.pipeline import ExportOptions, ExportResult, commit_outputs, manifest
from exporter.selection import fetch_by_ids, stream_pages
from exporter.tokens import counter_for
from exporter.validate import check_preference_row

Source = Literal["feedback", "shadow"]
DEFAULT_MARGIN = 0.5


@dataclass(slots=True)
class _Extremes:
    best: tuple[float, str]
    worst: tuple[float, str]


def preference_row(input_example: Example, better: Example, worse: Example) -> dict[str, Any]:
    given: dict[str, Any] = {"messages": input_example.prompt}
    if input_example.tools:
        given["tools"] = input_example.tools
        if input_example.parallel_tool_calls is not None:
            given["parallel_tool_calls"] = input_example.parallel_tool_calls
    return {
        "input": given,
        "preferred_output": [better.answer],
        "non_preferred_output": [worse.answer],
    }


def _input_key(example: Example) -> bytes:
    return exact_key(
        Example(example.call_id, [*example.prompt, {"role": "assistant"}], example.tools)
    )


class _Builder:
    def __init__(self, options: ExportOptions, tally: report.Tally) -> None:
        self.options = options
        self.tally = tally

    def example(self, row: dict[str, Any] | None) -> Example | None:
        if row is None:
            self.tally.drop("call no longer stored")
            return None
        try:
            example = example_from_call(row)
        except Dropped as dropped:
            self.tally.drop(dropped.reason)
            return None
        self.options.system_prompt.apply(example)
        return example


async def _feedback_pairs(
    engine: AsyncEngine, options: ExportOptions, builder: _Builder, margin: float
) -> tuple[int, list[tuple[str, str]]]:
    filters = options.filters
    if filters.min_feedback is None:
        filters = dataclasses.replace(filters, min_feedback=-1.0)  # calls with feedback only
    extremes: dict[bytes, _Extremes] = {}
    selected = 0
    async for page in stream_pages(
        engine, filters, options.page_size, options.limit, options.archive
    ):
        selected += len(page)
        for row in page:
            example = builder.example(row)
            if example is None:
                continue
            score = float(row["feedback_score"])
            key = _input_key(example)
            seen = extremes.get(key)
            if seen is None:
                extremes[key] = _Extremes((score, example.call_id), (score, example.call_id))
            elif score > seen.best[0]:
                seen.best = (score, example.call_id)
            elif score < seen.worst[0]:
                seen.worst = (score, example.call_id)
    pairs = [(e.best[1], e.worst[1]) for e in extremes.values() if e.best[0] - e.worst[0] >= margin]
    unpaired = selected - sum(builder.tally.dropped.values()) - 2 * len(pairs)
    if unpaired > 0:
        builder.tally.dropped["no pair (one answer, or scores within the margin)"] += unpaired
    return selected, pairs


async def _shadow_pairs(
    engine: AsyncEngine,
    options: ExportOptions,
    builder: _Builder,
    margin: float,
    judge: PairJudge | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    primary_variant = options.filters.variant
    filters = dataclasses.replace(options.filters, shadow="only", variant=None)
    if filters.min_feedback is None and judge is None:
        filters = dataclasses.replace(filters, min_feedback=-1.0)
    selected = 0
    pairs: list[tuple[str, str]] = []
    async for page in stream_pages(
        engine, filters, options.page_size, options.limit, options.archive
    ):
        selected += len(page)
        primaries = await fetch_by_ids(engine, [row["shadow_of"] for row in page], options.archive)
        to_judge: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for shadow in page:
            primary = primaries.get(shadow["shadow_of"])
            if primary is None:
                builder.tally.drop("primary call not stored")
                continue
            if primary_variant is not None and primary["variant"] != primary_variant:
                builder.tally.drop("primary of another variant")
                continue
            if judge is not None:
                to_judge.append((primary, shadow))
                continue
            if primary["feedback_score"] is None:
                builder.tally.drop("shadow without a judged primary")
                continue
            difference = float(shadow["feedback_score"]) - float(primary["feedback_score"])
            if abs(difference) < margin:
                builder.tally.drop("scores too close")
                continue
            better, worse = (shadow, primary) if difference > 0 else (primary, shadow)
            pairs.append((better["id"], worse["id"]))
        if judge is not None and to_judge:
            for outcome in await judge.judge_all(to_judge):
                if isinstance(outcome, str):
                    builder.tally.drop(outcome)
                else:
                    pairs.append(outcome)
    return selected, pairs


async def run_preference_export(
    engine: AsyncEngine,
    options: ExportOptions,
    source: Source,
    margin: float = DEFAULT_MARGIN,
    judge: PairJudge | None = None,
) -> ExportResult:
    """Preference rows; ``judge`` (shadow pairs only) decides pairs instead of feedback."""
    out_dir = prepare_directory(options.out_dir) if options.out_dir is not None else None
    tally = report.Tally()
    builder = _Builder(options, tally)
    if source == "feedback":
        selected, pairs = await _feedback_pairs(engine, options, builder, margin)
    else:
        selected, pairs = await _shadow_pairs(engine, options, builder, margin, judge)
    counter = counter_for(options.base_model, options.tokenizer)
    limit = options.token_limit or counter.token_limit(options.base_model)
    leaks = LeakCheck() if options.leak_check != "off" else None
    writers: dict[str, AtomicJsonl] = {}
    if out_dir is not None:
        writers = {side: AtomicJsonl(out_dir / f"{side}.jsonl") for side in ("train", "valid")}
    try:
        splitter = options.splitter()
        for start in range(0, len(pairs), options.page_size):
            chunk = pairs[start : start + options.page_size]
            fitting = []
            rows = await fetch_by_ids(
                engine, [call for pair in chunk for call in pair], options.archive
            )
            for better_id, worse_id in chunk:
                better = builder.example(rows.get(better_id))
                worse = builder.example(rows.get(worse_id))
                if better is None or worse is None:
                    continue
                if exact_key(better) == exact_key(worse):
                    tally.drop("same answer")
                    continue
                if leaks is not None:
                    kinds = sorted(set(leaks.kinds_in(better)) | set(leaks.kinds_in(worse)))
                    if kinds and options.leak_check == "fail":
                        raise InvalidDataset(
                            f"call {better_id} or {worse_id} holds {', '.join(kinds)}"
                        )
                    if kinds:
                        tally.drop(f"leak ({', '.join(kinds)})")
                        continue
                row = preference_row(better, better, worse)
                problems = check_preference_row(row)
                if problems:
                    tally.problem(problems, f"{better_id}/{worse_id}")
                    tally.drop("invalid row")
                    continue
                counted = counter.example(
                    [*row["input"]["messages"], *row["preferred_output"]], row["input"].get("tools")
                )
                if counted.total > limit:
                    tally.too_long(better_id)
                    tally.drop("over the token limit")
                    continue
                fitting.append((better, row, counted))
            sides = splitter.sides(
                [prompt_key(better) for better, _, _ in fitting],
                [prompt_text(better) for better, _, _ in fitting],
            )
            for (_, row, counted), side in zip(fitting, sides, strict=True):
                tally.count(side, counted.total, counted.assistant, limit)
                if writers:
                    writers[side].write(row)
        built = report.build(
            tally,
            base_model=options.base_model,
            encoding=counter.encoding,
            token_limit=limit,
            training_price=options.price,
            selected=selected,
            split=splitter.summary(options.split_groups),
            counter=counter,
        )
        built["format"] = "preference"
        built["pairs_found"] = len(pairs)
        files: dict[str, Path] = {}
        if out_dir is not None:
            described = manifest(options, built) | {"format": "preference", "pairs": source}
            files = commit_outputs(out_dir, writers, built, described)
        return ExportResult(built, files)
    finally:
        for writer in writers.values():
            writer.discard()
