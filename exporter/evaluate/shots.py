"""Few-shot examples for a candidate base model: captured prompts and the teacher's answers
from the *training* side of the export's split (never a held-out prompt), prepended to each
held-out prompt as prior turns.

Only plain conversations make shots: user and assistant turns of text (a system prompt is left
out: the held-out prompt brings its own), answered with text, no tool calls. Of those, the
``count`` with the lowest split hash are taken, so the shots are the same on every run.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.examples import Dropped, Example, Message, example_from_call
from exporter.filters import Filters
from exporter.normalize import prompt_key
from exporter.selection import stream_pages
from exporter.split import share_of

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource


@dataclass(frozen=True, slots=True)
class Shot:
    call_id: str
    turns: list[Message]
    """The conversation without its system prompt, ending with the teacher's answer."""


def _plain(message: Message) -> bool:
    return (
        message.get("role") in ("user", "assistant")
        and isinstance(message.get("content"), str)
        and bool(message["content"].strip())
        and not message.get("tool_calls")
    )


def as_shot(example: Example) -> Shot | None:
    """The example as prior turns, or None when it is no plain text conversation."""
    turns = [m for m in example.messages if m.get("role") != "system"]
    if not turns or turns[-1].get("role") != "assistant" or not all(map(_plain, turns)):
        return None
    return Shot(example.call_id, [{"role": m["role"], "content": m["content"]} for m in turns])


async def training_shots(
    engine: AsyncEngine,
    filters: Filters,
    count: int,
    valid_share: float,
    salt: str,
    page_size: int = 1000,
    archive: ArchiveSource | None = None,
) -> list[Shot]:
    """Up to ``count`` shots from the training side of the split (share >= valid_share)."""
    if count <= 0:
        return []
    chosen: list[tuple[float, str, Shot]] = []  # a max-heap by share (negated)
    keys: set[bytes] = set()
    async for page in stream_pages(engine, filters, page_size, archive=archive):
        for row in page:
            try:
                example = example_from_call(row)
            except Dropped:
                continue
            key = prompt_key(example)
            share = share_of(key, salt)
            if share < valid_share or key in keys:
                continue
            shot = as_shot(example)
            if shot is None:
                continue
            keys.add(key)
            entry = (-share, example.call_id, shot)
            if len(chosen) < count:
                heapq.heappush(chosen, entry)
            elif -chosen[0][0] > share:
                heapq.heapreplace(chosen, entry)
    return [shot for _, _, shot in sorted(chosen, key=lambda entry: -entry[0])]


def with_shots(messages: list[Message], shots: list[Shot]) -> list[Message]:
    """The prompt's leading system messages, then the shots' turns, then the rest."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in ("system", "developer"):
        lead += 1
    prior = [turn for shot in shots for turn in shot.turns]
    return [*messages[:lead], *prior, *messages[lead:]]
