"""The export: selected calls -> examples -> curated -> split -> written, validated, reported.

Per page of calls: each becomes an example (or is dropped with a reason), gets its system
prompt treatment and weights, is validated, checked for exact duplicates and leaks; the
page's survivors go through the near-duplicate index together; what is left is counted in
tokens, dropped if over the base model's limit, and written to the side of the split of its
group of similar prompts (``split.GroupSplit``: the side its prompt hashes to, unless it is
similar to an earlier prompt, whose side it then shares). Memory holds one page, the
duplicate keys (8 bytes per example), the near-duplicate index, the split's group index and
one token count per example.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter import hyperparams, report
from exporter.errors import InvalidDataset
from exporter.examples import Dropped, Example, example_from_call, weight_last_answer
from exporter.filters import Filters
from exporter.leaks import LeakCheck, LeakMode
from exporter.neardup import NearDuplicateIndex, NearDupOptions
from exporter.normalize import exact_key, near_dup_text, prompt_key, prompt_text
from exporter.output import AtomicJsonl, prepare_directory, write_json
from exporter.seen import SeenKeys
from exporter.selection import DEFAULT_PAGE_SIZE, stream_pages
from exporter.split import (
    DEFAULT_GROUP_THRESHOLD,
    DEFAULT_SALT,
    DEFAULT_VALID_SHARE,
    GroupSplit,
    group_options,
)
from exporter.system_prompt import SystemPrompt
from exporter.tokens import counter_for
from exporter.validate import check_chat_row

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource

Weighting = Literal["none", "last"]
MANIFEST = "manifest.json"
_GC_THRESHOLD = 50_000
REPORT = "report.json"


@dataclass(frozen=True)
class ExportOptions:
    filters: Filters = field(default_factory=Filters)
    out_dir: Path | None = None
    """None: a dry run, nothing written."""
    base_model: str = "gpt-4o-mini"
    system_prompt: SystemPrompt = field(default_factory=SystemPrompt)
    exact_dedup: bool = True
    near_dup: NearDupOptions | None = field(default_factory=NearDupOptions)
    leak_check: LeakMode = "drop"
    valid_share: float = DEFAULT_VALID_SHARE
    split_salt: str = DEFAULT_SALT
    split_groups: float | None = DEFAULT_GROUP_THRESHOLD
    """Prompts at least this similar (word 3-gram Jaccard) share a side; None: each row by its
    own prompt's hash."""
    weight: Weighting = "none"
    token_limit: int | None = None
    """Tokens per example; the base model's training context when None."""
    training_price: float | None = None
    """USD per 1M training tokens; the base model's list price when None."""
    page_size: int = DEFAULT_PAGE_SIZE
    limit: int | None = None
    tokenizer: Path | None = None
    """A directory with the base model's tokenizer.json (and chat template) to count with."""
    archive: ArchiveSource | None = None
    """Archived calls to read beside the database's, with the same filters."""

    def splitter(self) -> GroupSplit:
        groups = group_options(self.split_groups) if self.split_groups is not None else None
        return GroupSplit(self.valid_share, self.split_salt, groups)

    @property
    def price(self) -> float | None:
        if self.training_price is not None:
            return self.training_price
        return hyperparams.training_price(self.base_model)


@dataclass
class ExportResult:
    report: dict[str, Any]
    files: dict[str, Path]


@dataclass(frozen=True, slots=True)
class _Refused:
    """A call that makes no example: why (the tally's reason), and the row's problems."""

    reason: str
    problems: frozenset[str] = frozenset()
    call_id: str = ""


class _Curator:
    """The per-row steps, with the state they keep across pages."""

    def __init__(self, options: ExportOptions, tally: report.Tally) -> None:
        self.options = options
        self.tally = tally
        self.leaks = LeakCheck() if options.leak_check != "off" else None
        self.seen = SeenKeys()
        self.near = NearDuplicateIndex(options.near_dup) if options.near_dup else None

    def _make(self, row: dict[str, Any]) -> tuple[Example, dict[str, Any]] | _Refused:
        try:
            example = example_from_call(row)
        except Dropped as dropped:
            return _Refused(dropped.reason)
        self.options.system_prompt.apply(example)
        if self.options.weight == "last":
            weight_last_answer(example)
        out = example.row()
        problems = check_chat_row(out)
        if problems:
            return _Refused("invalid row", frozenset(problems), example.call_id)
        return example, out

    def examples(self, page: list[dict[str, Any]]) -> list[tuple[Example, dict[str, Any]]]:
        """The page's calls that make valid examples, no exact duplicate of an earlier one
        and without leaks; the others tallied, in the page's order. The duplicate keys of
        the page are looked up at once."""
        tally = self.tally
        made = [self._make(row) for row in page]
        valid = [item for item in made if not isinstance(item, _Refused)]
        first = [True] * len(valid)
        if self.options.exact_dedup and valid:
            keys = np.fromiter(
                (int.from_bytes(exact_key(example)[:8], "big") for example, _ in valid),
                dtype=np.uint64,
                count=len(valid),
            )
            first = self.seen.first_seen(keys).tolist()
        new = iter(first)
        kept: list[tuple[Example, dict[str, Any]]] = []
        for item in made:
            if isinstance(item, _Refused):
                if item.problems:
                    tally.problem(set(item.problems), item.call_id)
                tally.drop(item.reason)
                continue
            if not next(new):
                tally.drop("duplicate (exact)")
                continue
            if self.leaks is not None:
                example = item[0]
                kinds = self.leaks.kinds_in(example)
                if kinds:
                    if self.options.leak_check == "fail":
                        raise InvalidDataset(
                            f"call {example.call_id} holds what looks like {', '.join(kinds)}: "
                            "fix the capture's redaction, or export with --leak-check drop"
                        )
                    tally.drop(f"leak ({', '.join(kinds)})")
                    continue
            kept.append(item)
        return kept

    def distinct(
        self, batch: list[tuple[Example, dict[str, Any]]]
    ) -> list[tuple[Example, dict[str, Any]]]:
        if self.near is None or not batch:
            return batch
        keep = self.near.keep([near_dup_text(example) for example, _ in batch])
        survivors = [item for item, kept in zip(batch, keep, strict=True) if kept]
        for _ in range(len(batch) - len(survivors)):
            self.tally.drop("near-duplicate")
        return survivors


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector less often while the export runs.

    Each page in flight is thousands of dicts and lists (rows, examples, messages) that live
    just long enough to be promoted and traversed again by every collection of the older
    generations; they are trees, freed by reference counting, not cycles. By default a
    collection runs every 700 allocations, about 15% of an export's CPU time; every 50,000
    keeps what cycles asyncio makes collected, at a small fraction of the cost."""
    thresholds = gc.get_threshold()
    gc.set_threshold(_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


async def run_export(engine: AsyncEngine, options: ExportOptions) -> ExportResult:
    with _fewer_collections():
        return await _run_export(engine, options)


async def _run_export(engine: AsyncEngine, options: ExportOptions) -> ExportResult:
    out_dir = prepare_directory(options.out_dir) if options.out_dir is not None else None
    tally = report.Tally()
    curator = _Curator(options, tally)
    counter = counter_for(options.base_model, options.tokenizer)
    limit = options.token_limit or counter.token_limit(options.base_model)
    writers: dict[str, AtomicJsonl] = {}
    if out_dir is not None:
        writers = {side: AtomicJsonl(out_dir / f"{side}.jsonl") for side in ("train", "valid")}
    splitter = options.splitter()
    selected = 0
    try:
        async for page in stream_pages(
            engine, options.filters, options.page_size, options.limit, options.archive
        ):
            selected += len(page)
            batch = curator.examples(page)
            fitting = []
            for example, out in curator.distinct(batch):
                counted = counter.example(out["messages"], out.get("tools"))
                if counted.total > limit:
                    tally.too_long(example.call_id)
                    tally.problem({"too_many_tokens"}, example.call_id)
                    tally.drop("over the token limit")
                    continue
                fitting.append((example, out, counted))
            sides = splitter.sides(
                [prompt_key(example) for example, _, _ in fitting],
                [prompt_text(example) for example, _, _ in fitting],
            )
            for (_, out, counted), side in zip(fitting, sides, strict=True):
                tally.count(side, counted.total, counted.assistant, limit)
                if writers:
                    writers[side].write(out)
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
        if curator.leaks is not None and curator.leaks.found:
            built["leaks_found"] = dict(curator.leaks.found)
        files: dict[str, Path] = {}
        if out_dir is not None:
            files = commit_outputs(out_dir, writers, built, manifest(options, built))
        return ExportResult(built, files)
    finally:
        for writer in writers.values():
            writer.discard()


def commit_outputs(
    out_dir: Path,
    writers: Mapping[str, AtomicJsonl],
    built: dict[str, Any],
    described: dict[str, Any],
) -> dict[str, Path]:
    """Move the written files into place, then the report and the manifest; their paths."""
    files: dict[str, Path] = {}
    for name, writer in writers.items():
        writer.commit()
        files[name] = writer.target
    write_json(out_dir / REPORT, built)
    write_json(out_dir / MANIFEST, described)
    files["report"] = out_dir / REPORT
    files["manifest"] = out_dir / MANIFEST
    return files


def manifest(options: ExportOptions, built: dict[str, Any]) -> dict[str, Any]:
    """What made the files: enough to make them again, and for ``eval`` to find the held-out
    prompts (the split's share and salt; its groups of similar prompts)."""
    filters = asdict(options.filters)
    for key in ("since", "until"):
        if filters[key] is not None:
            filters[key] = filters[key].isoformat()
    return {
        "format": "chat",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "filters": filters,
        "base_model": options.base_model,
        "tokenizer": str(options.tokenizer) if options.tokenizer is not None else None,
        "system_prompt": {"mode": options.system_prompt.mode, "text": options.system_prompt.text},
        "exact_dedup": options.exact_dedup,
        "near_dup": asdict(options.near_dup) if options.near_dup else None,
        "leak_check": options.leak_check,
        "weight": options.weight,
        "split": {
            "valid_share": options.valid_share,
            "salt": options.split_salt,
            "group_threshold": options.split_groups,
            "groups_merged": built["split"]["groups_merged"],
            "rows_moved": built["split"]["rows_moved"],
        },
        "hyperparameters": built["hyperparameters"],
        "counts": {"selected": built["selected"], **built["splits"]},
    }
