"""Large repeated parts of calls stored once, addressed by their hash (content_store).

Real traffic repeats itself: the same system prompt and tool definitions ride on every call of a
feature, and each turn of a conversation repeats the turns before it, the answers included (91%
of a request's bytes on ``python -m bench.capture_size``'s workload). With
``capture.content_store: true`` the preparer (``capture.prepare``) cuts such parts out of the
stored request, response and ``normalized`` view, and the ``content`` table keeps each part once.

Which parts (``slots``), when their compact JSON is at least ``MIN_PART_BYTES`` long:

- a request (and the normalized view's request): the values of ``system``, ``tools`` and
  ``instructions``; each item of ``messages`` and of ``input`` (when a list), or, for an item
  whose ``content`` is a string, that string (so a turn that was an answer shares its row with
  the response that gave it);
- a response: the ``content`` string of each choice's ``message`` (OpenAI's chat completion, and
  the normalized view's response), the ``text`` of each ``text`` block (Anthropic's message).

A part is addressed by the sha256 (hex) of its compact JSON as ``orjson`` writes it, keys in the
order they came, and stored as those bytes compressed (zlib): PostgreSQL compresses nothing in a
row under ~2 kB, and most parts are smaller. A part read back is the part written; on
PostgreSQL its objects' keys are put in JSONB's order (shorter keys first), as a JSONB column
gives them, so a record reads exactly as it did when stored whole.

How a call refers to a part: the part's place holds ``{"$ref": "<hash>"}`` and the call's
``content_refs`` column is true. Only rows with ``content_refs`` true are resolved (rows written
before migration 0006, or with the setting off, are read as they are), and only at the places
above, so a client's own ``{"$ref": ...}`` elsewhere in a body is never touched. A part that is
itself a one-key ``{"$ref": ...}`` object is always stored in ``content``, whatever its size, so
that every marker at those places is a reference.

Writing: the prepared row carries its parts under ``CONTENT_KEY``; ``Store.insert_calls`` inserts
the parts it has not stored yet (``INSERT ... ON CONFLICT (hash) DO NOTHING``, in hash order,
before the calls, in the same transaction) and remembers the hashes once committed, so a part
already stored costs its hash and nothing in the database. The ``Cutter`` remembers the parts
it has seen before redaction, so a repeated part is not redacted nor hashed again.

Reading: ``resolve_rows`` puts the parts back in a page of rows with one query per 500 distinct
hashes (never one per row): ``Store.get_call``, the exporter's ``selection`` (export, eval's
held-out prompts and shots, preference pairs) and therefore the dashboard's call view all see
the record as it was before it was cut.

Collecting: ``content.last_seen`` is the latest UTC day a writer stored a call referring to the
part (``Store.insert_calls`` writes it with the part, and refreshes it at most once a day per
part: ``ON CONFLICT ... DO UPDATE``); ``capture.retention.collect_content`` deletes the parts
not seen since the oldest call kept (and not yesterday or today), after every prune and in the
writer's maintenance. Its invariant and its test: no part a kept call refers to is collected.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from capture.schema import content

log = logging.getLogger("capture.content")

MIN_PART_BYTES = 256
"""Parts shorter than this (compact JSON) stay inline: a reference costs ~80 bytes."""
REF_KEY = "$ref"
CONTENT_KEY = "_content"
"""The key of a prepared row that holds its parts ({hash: part}); not a column."""
FLAG = "content_refs"
"""The column that says a row's request holds references."""
WHOLE_KEYS = ("system", "tools", "instructions")
LIST_KEYS = ("messages", "input")
RESOLVE_CHUNK = 500
ZLIB_LEVEL = 6

Parts = dict[str, Any]
Visit = Callable[[Any], Any]
"""Given a slot's value: its replacement, or None to leave it."""


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and REF_KEY in value


def _text_slot(value: Any) -> bool:
    return isinstance(value, str) or _is_marker(value)


def _in_key(node: dict[str, Any], key: str, visit: Visit) -> dict[str, Any] | None:
    """``node`` with ``node[key]`` visited (a copy), or None when it did not change."""
    new = visit(node[key])
    if new is None:
        return None
    out = dict(node)
    out[key] = new
    return out


def _in_list(items: list[Any], visit_item: Visit) -> list[Any] | None:
    out: list[Any] | None = None
    for index, item in enumerate(items):
        new = visit_item(item)
        if new is not None:
            out = out if out is not None else list(items)
            out[index] = new
    return out


def map_request(body: Any, visit: Visit) -> Any:
    """``body`` (a request) with each slot replaced by ``visit``; copies only what changes."""
    if not isinstance(body, dict):
        return body
    out: dict[str, Any] | None = None
    for key in WHOLE_KEYS:
        if key in body:
            new = visit(body[key])
            if new is not None:
                out = out if out is not None else dict(body)
                out[key] = new

    def message(item: Any) -> Any:
        if isinstance(item, dict) and _text_slot(item.get("content")):
            return _in_key(item, "content", visit)
        return visit(item)

    for key in LIST_KEYS:
        items = body.get(key)
        if isinstance(items, list):
            new_items = _in_list(items, message)
            if new_items is not None:
                out = out if out is not None else dict(body)
                out[key] = new_items
    return out if out is not None else body


def map_response(body: Any, visit: Visit) -> Any:
    """``body`` (a chat completion or an Anthropic message) with each answer text replaced by
    ``visit``; copies only what changes."""
    if not isinstance(body, dict):
        return body
    choices = body.get("choices")
    if isinstance(choices, list):

        def choice(item: Any) -> Any:
            message = item.get("message") if isinstance(item, dict) else None
            if isinstance(message, dict) and _text_slot(message.get("content")):
                new = _in_key(message, "content", visit)
                if new is not None:
                    return {**item, "message": new}
            return None

        new_choices = _in_list(choices, choice)
        return body if new_choices is None else {**body, "choices": new_choices}
    blocks = body.get("content")
    if body.get("type") == "message" and isinstance(blocks, list):

        def block(item: Any) -> Any:
            if (
                isinstance(item, dict)
                and item.get("type") == "text"
                and _text_slot(item.get("text"))
            ):
                return _in_key(item, "text", visit)
            return None

        new_blocks = _in_list(blocks, block)
        return body if new_blocks is None else {**body, "content": new_blocks}
    return body


def map_row(row: dict[str, Any], visit: Visit) -> None:
    """Every slot of a row (request, response, the normalized view's two halves), in place."""
    if "request" in row:
        row["request"] = map_request(row["request"], visit)
    if "response" in row:
        row["response"] = map_response(row["response"], visit)
    view = row.get("normalized")
    if isinstance(view, dict):
        new = dict(view)
        if isinstance(view.get("request"), dict):
            new["request"] = map_request(view["request"], visit)
        if isinstance(view.get("response"), dict):
            new["response"] = map_response(view["response"], visit)
        row["normalized"] = new


def externalize(body: Any, parts: Parts, min_bytes: int = MIN_PART_BYTES) -> Any:
    """``body`` (a request) with its large parts replaced by references, added to ``parts``;
    ``body`` itself when nothing was cut (it is never changed in place)."""
    return Cutter(min_bytes, memo_bytes=0).cut(body, parts)


Redact = Callable[[Any], Any]
MEMO_BYTES = 32 * 1024 * 1024
"""What a ``Cutter`` remembers of the parts it has seen (their bytes before redaction)."""


class Cutter:
    """Cuts parts out, remembering those it has cut: a part whose exact bytes it has seen
    already (the system prompt of every call of a feature) costs one ``orjson.dumps`` and a dict
    lookup, not its redaction nor its sha256 again.

    ``cut(body, parts, redact)`` takes a parsed request, not redacted yet when ``redact`` is
    given: each large part is redacted alone (redaction is per string, so a part redacted alone
    is the part redacted in its body), then hashed; the rest is left for the caller to redact.
    Parts are measured before redaction. One memo per ``redact`` function (a call's redaction
    kinds), cleared whole when it holds more than ``memo_bytes``. ``cut_response`` cuts an
    answer (already redacted; answers do not repeat, so they are not remembered).
    """

    def __init__(self, min_bytes: int = MIN_PART_BYTES, memo_bytes: int = MEMO_BYTES) -> None:
        self.min_bytes = min_bytes
        self.memo_bytes = memo_bytes
        self._memos: dict[Redact | None, dict[bytes, tuple[str, Any]]] = {}
        self._sizes: dict[Redact | None, int] = {}

    def cut(self, body: Any, parts: Parts, redact: Redact | None = None) -> Any:
        """``body`` with its large parts replaced by references (their redacted form added to
        ``parts``); ``body`` itself when nothing was cut."""
        if not isinstance(body, dict):
            return body
        memo = self._memos.get(redact)
        if memo is None:
            memo = self._memos[redact] = {}
            self._sizes[redact] = 0
        return map_request(body, lambda value: self._ref(value, parts, redact, memo))

    def cut_response(self, body: Any, parts: Parts) -> Any:
        return map_response(body, lambda value: self._ref(value, parts, None, None))

    def _ref(
        self,
        value: Any,
        parts: Parts,
        redact: Redact | None,
        memo: dict[bytes, tuple[str, Any]] | None,
    ) -> dict[str, str] | None:
        if value is None or isinstance(value, bool | int | float):
            return None
        try:
            data = orjson.dumps(value)
        except orjson.JSONEncodeError:  # nested too deep: left inline, as without the store
            return None
        if len(data) < self.min_bytes and not _is_marker(value):
            return None
        known = memo.get(data) if memo is not None else None
        if known is None:
            stored = value
            stored_bytes = data
            if redact is not None:
                stored = redact(value)
                stored_bytes = orjson.dumps(stored)
            known = (hashlib.sha256(stored_bytes).hexdigest(), stored)
            if memo is not None:
                size = self._sizes[redact] + len(data)
                if size > self.memo_bytes:
                    memo.clear()
                    size = len(data)
                self._sizes[redact] = size
                memo[data] = known
        digest, stored = known
        parts[digest] = stored
        return {REF_KEY: digest}


def encode(part: Any) -> bytes:
    """A part as stored in ``content.body``: its compact JSON, compressed."""
    return zlib.compress(orjson.dumps(part), ZLIB_LEVEL)


def _jsonb_order(value: Any) -> Any:
    """``value`` with every object's keys in JSONB's order: shorter (in UTF-8 bytes) first,
    then bytewise."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
        return {key: _jsonb_order(value[key]) for key in keys}
    if isinstance(value, list):
        return [_jsonb_order(item) for item in value]
    return value


def decode(body: bytes, dialect: str) -> Any:
    """A part from ``content.body``; on PostgreSQL in the order a JSONB column gives."""
    part = orjson.loads(zlib.decompress(body))
    return _jsonb_order(part) if dialect == "postgresql" else part


def _collect(into: set[str]) -> Visit:
    def visit(value: Any) -> None:
        if _is_marker(value) and isinstance(value[REF_KEY], str):
            into.add(value[REF_KEY])

    return visit


def references(body: Any) -> set[str]:
    """The hashes a stored request refers to."""
    found: set[str] = set()
    map_request(body, _collect(found))
    return found


def row_references(row: dict[str, Any]) -> set[str]:
    """The hashes a stored row refers to (request, response, normalized)."""
    found: set[str] = set()
    map_row(dict(row), _collect(found))
    return found


def _put_back(found: dict[str, Any]) -> Visit:
    def visit(value: Any) -> Any:
        if not _is_marker(value):
            return None
        digest = value[REF_KEY]
        if not isinstance(digest, str) or digest not in found:
            log.error("capture content %s is missing: the reference is left in place", digest)
            return None
        return found[digest]

    return visit


def substitute(body: Any, found: dict[str, Any]) -> Any:
    """``body`` (a request) with each reference replaced by its part from ``found``."""
    return map_request(body, _put_back(found))


def substitute_row(row: dict[str, Any], found: dict[str, Any]) -> None:
    """``row`` with each reference replaced by its part from ``found``, in place."""
    map_row(row, _put_back(found))


async def fetch_parts(connection: AsyncConnection, hashes: Iterable[str]) -> dict[str, Any]:
    """The parts with these hashes, one query per ``RESOLVE_CHUNK`` of them."""
    wanted = sorted(set(hashes))
    dialect = connection.dialect.name
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), RESOLVE_CHUNK):
        chunk = wanted[start : start + RESOLVE_CHUNK]
        query = select(content.c.hash, content.c.body).where(content.c.hash.in_(chunk))
        for digest, body in (await connection.execute(query)).all():
            found[digest] = decode(body, dialect)
    return found


async def resolve_rows(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Put the parts back into ``rows`` (in place), and drop their ``content_refs`` key: the
    rows are then those the readers saw before the content store. One query per page."""
    targets = [row for row in rows if row.pop(FLAG, None)]
    if not targets:
        return
    hashes: set[str] = set()
    for row in targets:
        hashes |= row_references(row)
    found = await fetch_parts(connection, hashes)
    for row in targets:
        substitute_row(row, found)
