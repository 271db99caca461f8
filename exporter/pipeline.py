"""The export: selected calls -> examples -> curated -> split -> written, validated, reported.

Per page of calls, first what needs no other row (``exporter.prepared``, in worker processes
for a large export: ``exporter.workers``): each call becomes an example (or is dropped with a
reason), gets its system prompt treatment and weights, is validated, checked for leaks,
sketched for near duplicates and prompt groups, counted in tokens and serialised. Then, here,
in order, what depends on the rows before it: exact duplicates of an earlier example are
dropped, then leaks, then near duplicates of a kept example (the page's survivors go through
the index together), then what is over the base model's token limit; the rest is written to
the side of the split of its group of similar prompts (``split.GroupSplit``: the side its
prompt hashes to, unless it is similar to an earlier prompt, whose side it then shares).
Memory holds a few pages, the duplicate keys (8 bytes per example), the near-duplicate
index, the split's group index and one token count per example.
"""

from __future__ import annotations

import datetime as dt
import gc
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter import hyperparams, report
from exporter.errors import InvalidDataset
from exporter.filters import Filters
from exporter.leaks import LeakMode
from exporter.neardup import NearDuplicateIndex, NearDupOptions
from exporter.no_pandas import keep_pandas_out, let_pandas_in
from exporter.output import AtomicJsonl, prepare_directory, write_json
from exporter.prepared import SYSTEM, TOOLS, Plan, PreparedPage, Refusal, Weighting
from exporter.seen import SeenKeys
from exporter.selection import DEFAULT_PAGE_SIZE, listed_work
from exporter.split import (
    DEFAULT_GROUP_THRESHOLD,
    DEFAULT_SALT,
    DEFAULT_VALID_SHARE,
    GroupSplit,
    group_options,
)
from exporter.system_prompt import SystemPrompt
from exporter.tokens import TokenCounter, counter_for
from exporter.workers import default_workers, prepared_pages, trim_heap

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource

MANIFEST = "manifest.json"
_GC_THRESHOLD = 50_000
REPORT = "report.json"
TRIM_CALLS = 20_000
"""The C heap's free memory given back every this many calls read (``trim_heap``): pages
come and go while the indexes grow, and glibc keeps what the pages freed."""


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
    workers: int | None = None
    """Worker processes that prepare pages (``exporter.workers``): None for one per CPU, 0
    for none."""

    def plan(self) -> Plan:
        """What each page's preparation does (``exporter.prepared``)."""
        return Plan.of(
            system_prompt=self.system_prompt,
            weight=self.weight,
            exact_dedup=self.exact_dedup,
            leak_check=self.leak_check != "off",
            near_dup=self.near_dup,
            groups=group_options(self.split_groups) if self.split_groups is not None else None,
            valid_share=self.valid_share,
            salt=self.split_salt,
            base_model=self.base_model,
            tokenizer=self.tokenizer,
        )

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


class _Curator:
    """The decisions across rows, page by page in order, from what ``prepared`` made: seen
    before (exact)? a leak? near a kept example? over the token limit? which side?"""

    def __init__(self, options: ExportOptions, tally: report.Tally, counter: TokenCounter) -> None:
        self.options = options
        self.tally = tally
        self.counter = counter
        self.leaks_found: Counter[str] = Counter()
        self.seen = SeenKeys()
        self.near = NearDuplicateIndex(options.near_dup) if options.near_dup else None

    def examples(self, page: PreparedPage) -> npt.NDArray[np.bool_]:
        """Which of the page's examples are no exact duplicate of an earlier one and have no
        leak; the page's calls tallied in its order."""
        tally = self.tally
        count = len(page.positions)
        first = [True] * count
        if self.options.exact_dedup and count:
            first = self.seen.first_seen(page.exact).tolist()
        kept = np.zeros(count, dtype=bool)
        refusals = iter(page.refused)
        refusal = next(refusals, None)
        for number, position in enumerate(page.positions):
            while refusal is not None and refusal.position < position:
                self._refused(refusal)
                refusal = next(refusals, None)
            if not first[number]:
                tally.drop("duplicate (exact)")
                continue
            kinds = page.leaks.get(number)
            if kinds:
                self.leaks_found.update(kinds)
                if self.options.leak_check == "fail":
                    raise InvalidDataset(
                        f"call {page.call_ids[number]} holds what looks like {', '.join(kinds)}: "
                        "fix the capture's redaction, or export with --leak-check drop"
                    )
                tally.drop(f"leak ({', '.join(kinds)})")
                continue
            kept[number] = True
        while refusal is not None:
            self._refused(refusal)
            refusal = next(refusals, None)
        return kept

    def _refused(self, refusal: Refusal) -> None:
        if refusal.problems:
            self.tally.problem(set(refusal.problems), refusal.call_id)
        self.tally.drop(refusal.reason)

    def distinct(self, page: PreparedPage, kept: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """``kept`` less the near duplicates of examples kept before them."""
        if self.near is None or page.near is None or not kept.any():
            return kept
        numbers = np.flatnonzero(kept)
        survivors = np.array(self.near.keep_sketched(page.near.take(kept)), dtype=bool)
        for _ in range(len(numbers) - int(survivors.sum())):
            self.tally.drop("near-duplicate")
        distinct = np.zeros_like(kept)
        distinct[numbers[survivors]] = True
        return distinct

    def fitting(self, page: PreparedPage, kept: npt.NDArray[np.bool_], limit: int) -> list[int]:
        """The kept examples within the token limit (each counted in the counter's notes)."""
        fitting: list[int] = []
        tally, record = self.tally, self.counter.record
        for number in np.flatnonzero(kept).tolist():
            bits = int(page.observed[number])
            record(bool(bits & SYSTEM), bool(bits & TOOLS), page.template_refused.get(number))
            if int(page.tokens[number, 0]) > limit:
                call_id = page.call_ids[number]
                tally.too_long(call_id)
                tally.problem({"too_many_tokens"}, call_id)
                tally.drop("over the token limit")
                continue
            fitting.append(number)
        return fitting


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
    counter = counter_for(options.base_model, options.tokenizer)
    curator = _Curator(options, tally, counter)
    limit = options.token_limit or counter.token_limit(options.base_model)
    writers: dict[str, AtomicJsonl] = {}
    if out_dir is not None:
        writers = {side: AtomicJsonl(out_dir / f"{side}.jsonl") for side in ("train", "valid")}
    splitter = options.splitter()
    workers = default_workers() if options.workers is None else options.workers
    selected = 0
    downloads = tempfile.TemporaryDirectory(prefix="gateway-export-archive-")
    # pyarrow, reading the archive here, would import pandas for nothing (exporter.no_pandas)
    finder = keep_pandas_out() if options.archive is not None else None
    try:
        works = listed_work(
            engine,
            options.filters,
            options.page_size,
            options.limit,
            options.archive,
            Path(downloads.name),
        )
        pages = prepared_pages(
            works, engine, options.filters, options.plan(), workers, options.page_size
        )
        async with aclosing(pages) as prepared:
            async for page in prepared:
                if selected // TRIM_CALLS != (selected + page.size) // TRIM_CALLS:
                    trim_heap()
                selected += page.size
                kept = curator.distinct(page, curator.examples(page))
                fitting = curator.fitting(page, kept, limit)
                groups = page.groups.take(np.array(fitting, dtype=np.intp)) if page.groups else None
                sides = splitter.sides_sketched(page.valid[fitting].tolist(), groups)
                for number, side in zip(fitting, sides, strict=True):
                    total, assistant = page.tokens[number].tolist()
                    tally.count(side, total, assistant, limit)
                    if writers:
                        writers[side].write_line(page.line(number))
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
        if curator.leaks_found:
            built["leaks_found"] = dict(curator.leaks_found)
        files: dict[str, Path] = {}
        if out_dir is not None:
            files = commit_outputs(out_dir, writers, built, manifest(options, built))
        return ExportResult(built, files)
    finally:
        for writer in writers.values():
            writer.discard()
        reader = sys.modules.get("exporter.archive_read")  # loaded where this process read
        if reader is not None:
            reader.close_files()
        let_pandas_in(finder)
        downloads.cleanup()


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
