"""The held-out prompts: captured calls of the baseline whose prompt hashes to the validation
side of the export's split (so no candidate trained on them), one per distinct prompt.

Of those, the ``sample`` with the lowest split hash are taken: a uniform sample that is the
same on every run and grows by adding prompts, not by swapping them.

The export places a prompt similar to an earlier one on that one's side (``split``), so a
prompt can hash to the validation side and still be in the training file: given the export's
directory, ``trained_keys`` reads those prompts from its ``train.jsonl`` and they are skipped.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.errors import EvalError
from exporter.examples import Dropped, Example, chat_parts, example_from_call
from exporter.filters import CHAT_ENDPOINTS, Filters
from exporter.normalize import prompt_key
from exporter.selection import stream_pages
from exporter.split import share_of

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource


@dataclass(slots=True)
class HeldOut:
    call_id: str
    request: dict[str, Any]
    """The chat request the app sent, as captured (for an Anthropic Messages call: its
    normalised chat view's request, so every prompt is replayed to the chat API)."""
    example: Example
    """Its prompt and the baseline's recorded answer."""
    baseline_ms: float
    baseline_cost: float | None
    baseline_model: str | None


def trained_keys(train_file: Path, valid_share: float, salt: str) -> frozenset[bytes]:
    """The prompt keys of the training file's rows (chat or preference) that hash to the
    validation side: rows the export moved to their group's side."""
    keys: set[bytes] = set()
    with train_file.open("rb") as lines:
        for line in lines:
            row = orjson.loads(line)
            if "input" in row:  # a preference row
                messages = [*row["input"]["messages"], *row["preferred_output"]]
            else:
                messages = row["messages"]
            key = prompt_key(Example("", messages))
            if share_of(key, salt) < valid_share:
                keys.add(key)
    return frozenset(keys)


async def held_out(
    engine: AsyncEngine,
    filters: Filters,
    sample: int,
    valid_share: float,
    salt: str,
    page_size: int = 1000,
    trained: frozenset[bytes] = frozenset(),
    archive: ArchiveSource | None = None,
) -> tuple[list[HeldOut], int]:
    """Up to ``sample`` held-out prompts, and how many validation-side prompts there were;
    none of ``trained`` (prompt keys); from ``archive`` too when given."""
    chosen: list[tuple[float, str, HeldOut]] = []  # a max-heap by share (negated)
    keys: set[bytes] = set()
    eligible = 0
    async for page in stream_pages(engine, filters, page_size, archive=archive):
        for row in page:
            try:
                example = example_from_call(row)
                request, _ = chat_parts(row)
            except Dropped:
                continue
            key = prompt_key(example)
            share = share_of(key, salt)
            if share >= valid_share or key in keys or key in trained:
                continue
            keys.add(key)
            eligible += 1
            item = HeldOut(
                call_id=example.call_id,
                request=request,
                example=example,
                baseline_ms=float(row["total_ms"]),
                baseline_cost=row["cost_usd"],
                baseline_model=row["upstream_model"],
            )
            entry = (-share, example.call_id, item)
            if len(chosen) < sample:
                heapq.heappush(chosen, entry)
            elif -chosen[0][0] > share:
                heapq.heapreplace(chosen, entry)
    ordered = sorted(chosen, key=lambda entry: -entry[0])
    return [item for _, _, item in ordered], eligible


def baseline_filters(route: str, baseline: str, given: Filters) -> Filters:
    """The recorded calls eval compares with: the baseline's chat calls of the route (Anthropic
    Messages calls in their normalised chat form), in ``given``'s window and tags."""
    return Filters(
        endpoints=CHAT_ENDPOINTS,
        route=route,
        variant=baseline,
        since=given.since,
        until=given.until,
        tags=given.tags,
    )


async def baseline_held_out(
    engine: AsyncEngine,
    filters: Filters,
    sample: int,
    valid_share: float,
    salt: str,
    trained: frozenset[bytes] = frozenset(),
    archive: ArchiveSource | None = None,
) -> tuple[list[HeldOut], int]:
    """``held_out`` of ``baseline_filters``; EvalError when there is none."""
    items, eligible = await held_out(
        engine, filters, sample, valid_share, salt, trained=trained, archive=archive
    )
    if not items:
        raise EvalError(
            f"no held-out prompts: no captured {filters.variant} calls of route "
            f"{filters.route!r} fall on the validation side of the split"
        )
    return items, eligible
