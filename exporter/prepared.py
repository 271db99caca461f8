"""A page of selected calls made ready for the export's decisions: all the work on a row that
needs no other row.

Per call: its example (or why it makes none: the reason and the row's problems), the example's
exact-duplicate key, the leak check's findings, its near-duplicate text's and its prompt's
MinHash sketches, its token counts (and what the counter notes of it: a system message, tools,
a chat template's refusal), the side its own prompt hashes to, and its JSONL line. What is
decided across rows (seen before? near a kept example? which group of prompts?) is not here:
``exporter.pipeline`` decides it, in order, from what this gives.

Being stateless, a page can be prepared anywhere: in the export's process, or in a worker
process (``exporter.workers``), which is how a large export uses every core. The result is
columns (numpy arrays, one bytes object of lines), cheap to send between processes; the work
is done for every call that makes a valid example, including those the decisions then drop
as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from exporter.examples import Dropped, Example, example_from_call, weight_last_answer
from exporter.leaks import LeakCheck
from exporter.minhash import Sketcher, Sketches, band_keys, band_layout, small_signatures
from exporter.neardup import NearDupOptions
from exporter.normalize import compared_texts, keys
from exporter.split import Sides
from exporter.system_prompt import SystemPrompt
from exporter.tokens import TokenCounter, counter_for, observed
from exporter.validate import check_chat_row

Weighting = Literal["none", "last"]
SYSTEM, TOOLS = 1, 2
"""Bits of ``PreparedPage.observed``."""


@dataclass(frozen=True)
class Refusal:
    """A call that makes no example: where it is in its page, why (the tally's reason), and
    the row's problems."""

    position: int
    reason: str
    problems: frozenset[str] = frozenset()
    call_id: str = ""


@dataclass(frozen=True)
class Plan:
    """What to prepare, from the export's options; picklable, for worker processes."""

    system_prompt: SystemPrompt
    weight: Weighting
    exact_dedup: bool
    leak_check: bool
    near_dup: NearDupOptions | None
    groups: NearDupOptions | None
    valid_share: float
    salt: str
    base_model: str
    tokenizer: Path | None
    sketchers: dict[tuple[int, int], Sketcher] = field(default_factory=dict)
    """By (n-gram, permutations): made once by the export (a worker then needs no datasketch)."""
    layouts: dict[tuple[float, int], tuple[int, int]] = field(default_factory=dict)
    """Band layouts by (threshold, permutations), likewise."""

    @classmethod
    def of(cls, **settings: Any) -> Plan:
        plan = cls(**settings)
        for options in (plan.near_dup, plan.groups):
            if options is not None:
                key = (options.ngram, options.num_perm)
                if key not in plan.sketchers:
                    plan.sketchers[key] = options.sketcher()
                layout = (options.threshold, options.num_perm)
                plan.layouts[layout] = band_layout(*layout)
        return plan

    def sketches(self, options: NearDupOptions, signatures: npt.NDArray[np.uint32]) -> Sketches:
        bands, rows = self.layouts[(options.threshold, options.num_perm)]
        return Sketches(small_signatures(signatures), band_keys(signatures, bands, rows))


@dataclass
class PreparedPage:
    """A page's calls, ready: refusals by position; for the rest (the valid examples, in
    order) one entry per column."""

    size: int
    refused: list[Refusal]
    positions: list[int]
    call_ids: list[str]
    exact: npt.NDArray[np.uint64]
    """The first 8 bytes of each exact-duplicate key (zeros without exact dedup)."""
    leaks: dict[int, list[str]]
    """Findings of the leak check, by example number (none: clean)."""
    near: Sketches | None
    groups: Sketches | None
    tokens: npt.NDArray[np.int64]
    """(examples x 2): all tokens, the trained assistant tokens."""
    observed: npt.NDArray[np.uint8]
    """``SYSTEM`` and ``TOOLS`` bits."""
    template_refused: dict[int, str]
    valid: npt.NDArray[np.bool_]
    """The side each example's own prompt hashes to: True for validation."""
    lines: bytes
    ends: npt.NDArray[np.int64]
    """Where each example's JSONL line (newline included) ends in ``lines``."""

    def line(self, example: int) -> bytes:
        start = int(self.ends[example - 1]) if example else 0
        return self.lines[start : int(self.ends[example])]


class Preparer:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.counter: TokenCounter = counter_for(plan.base_model, plan.tokenizer)
        self.leaks = LeakCheck() if plan.leak_check else None
        self.sides = Sides(plan.valid_share, plan.salt)

    def _make(self, position: int, row: dict[str, Any]) -> tuple[Example, dict[str, Any]] | Refusal:
        try:
            example = example_from_call(row)
        except Dropped as dropped:
            return Refusal(position, dropped.reason)
        self.plan.system_prompt.apply(example)
        if self.plan.weight == "last":
            weight_last_answer(example)
        out = example.row()
        problems = check_chat_row(out)
        if problems:
            return Refusal(position, "invalid row", frozenset(problems), example.call_id)
        return example, out

    def page(self, rows: list[dict[str, Any]]) -> PreparedPage:
        plan = self.plan
        refused: list[Refusal] = []
        positions: list[int] = []
        examples: list[Example] = []
        outs: list[dict[str, Any]] = []
        for position, row in enumerate(rows):
            made = self._make(position, row)
            if isinstance(made, Refusal):
                refused.append(made)
                continue
            positions.append(position)
            examples.append(made[0])
            outs.append(made[1])
        count = len(examples)
        both = [keys(example) for example in examples]
        exact = np.zeros(count, dtype=np.uint64)
        todo = list(range(count))
        if plan.exact_dedup and count:
            exact = np.fromiter(
                (int.from_bytes(key[:8], "big") for key, _ in both), dtype=np.uint64, count=count
            )
            # a repeat of an earlier example of the page is a duplicate whatever came before
            # the page: the rest of its work would be thrown away
            firsts = dict(zip(exact.tolist()[::-1], range(count - 1, -1, -1), strict=True))
            todo = sorted(firsts.values())
        chosen = [examples[number] for number in todo]
        leaks: dict[int, list[str]] = {}
        if self.leaks is not None:
            for number, example in zip(todo, chosen, strict=True):
                kinds = self.leaks.kinds_of(example)
                if kinds:
                    leaks[number] = kinds
        near, groups = self._sketches(chosen, todo, count)
        tokens = np.zeros((count, 2), dtype=np.int64)
        seen = np.zeros(count, dtype=np.uint8)
        template_refused: dict[int, str] = {}
        counter = self.counter
        for number in todo:
            messages, tools = outs[number]["messages"], outs[number].get("tools")
            counted, refusal = counter.counted(messages, tools)
            tokens[number] = (counted.total, counted.assistant)
            system, tooled = observed(messages, tools)
            seen[number] = SYSTEM * system | TOOLS * tooled
            if refusal is not None:
                template_refused[number] = refusal
        valid = np.zeros(count, dtype=bool)
        valid[todo] = [self.sides(both[number][1]) for number in todo]
        lines = [b""] * count
        for number in todo:
            lines[number] = orjson.dumps(outs[number]) + b"\n"
        ends = np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=count))
        return PreparedPage(
            size=len(rows),
            refused=refused,
            positions=positions,
            call_ids=[example.call_id for example in examples],
            exact=exact,
            leaks=leaks,
            near=near,
            groups=groups,
            tokens=tokens,
            observed=seen,
            template_refused=template_refused,
            valid=valid,
            lines=b"".join(lines),
            ends=ends,
        )

    def _sketches(
        self, examples: list[Example], numbers: list[int], count: int
    ) -> tuple[Sketches | None, Sketches | None]:
        """The near-duplicate texts' and the prompts' sketches of ``examples`` (the page's
        ``numbers`` of ``count``; the others' rows left zero); with the same n-grams and
        permutations (the defaults), the prompts' n-grams are hashed once for both."""
        near, groups = self._sketched(examples)
        if len(numbers) == count:
            return near, groups
        return (
            near.placed(numbers, count) if near is not None else None,
            groups.placed(numbers, count) if groups is not None else None,
        )

    def _sketched(self, examples: list[Example]) -> tuple[Sketches | None, Sketches | None]:
        plan = self.plan
        near_options, group_options = plan.near_dup, plan.groups
        if near_options is None and group_options is None:
            return None, None
        compared = [compared_texts(example) for example in examples]
        texts = [text for text, _ in compared]
        prompts = [prompt for _, prompt in compared]
        if (
            near_options is not None
            and group_options is not None
            and (near_options.ngram, near_options.num_perm)
            == (group_options.ngram, group_options.num_perm)
        ):
            sketcher = plan.sketchers[(near_options.ngram, near_options.num_perm)]
            text_signatures, prompt_signatures = sketcher.pair(texts, prompts)
            return (
                plan.sketches(near_options, text_signatures),
                plan.sketches(group_options, prompt_signatures),
            )
        near = groups = None
        if near_options is not None:
            sketcher = plan.sketchers[(near_options.ngram, near_options.num_perm)]
            near = plan.sketches(near_options, sketcher.signatures(texts))
        if group_options is not None:
            sketcher = plan.sketchers[(group_options.ngram, group_options.num_perm)]
            groups = plan.sketches(group_options, sketcher.signatures(prompts))
        return near, groups
