"""Large repeated parts of requests stored once, addressed by their hash (content_store).

Real traffic repeats itself: the same system prompt and tool definitions ride on every call of a
feature, and each turn of a conversation repeats the turns before it (91% of a request's bytes
on ``python -m bench.capture_size``'s workload). With ``capture.content_store: true`` the
preparer (``capture.prepare``) cuts such parts out of the stored request and of the request of
the ``normalized`` view, and the ``content`` table keeps each part once.

Which parts: in a request that is a JSON object, the values of ``system``, ``tools`` and
``instructions``, and each item of ``messages`` and of ``input`` (when a list), whose compact
JSON is at least ``MIN_PART_BYTES`` long. A part is addressed by the sha256 (hex) of its compact
JSON as ``orjson`` writes it, keys in the order they came: two parts share a row only when their
bytes are the same, so a part read back is exactly the part written, on SQLite (JSON text kept as
written) as on PostgreSQL (JSONB).

How a call refers to a part: the part's place in the stored request holds ``{"$ref": "<hash>"}``
and the call's ``content_refs`` column is true. Only rows with ``content_refs`` true are resolved
(rows written before migration 0006, or with the setting off, are read as they are), and only at
the places above, so a client's own ``{"$ref": ...}`` elsewhere in a body is never touched. A part
that is itself a one-key ``{"$ref": ...}`` object is always stored in ``content``, whatever its
size, so that every marker at those places is a reference.

Writing: the prepared row carries its parts under ``CONTENT_KEY``; ``Store.insert_calls`` inserts
the parts it has not stored yet (``INSERT ... ON CONFLICT (hash) DO NOTHING``, in hash order,
before the calls, in the same transaction) and remembers the hashes once committed, so a part
already stored costs its hash and nothing in the database.

Reading: ``resolve_rows`` puts the parts back in a page of rows with one query per 500 distinct
hashes (never one per row): ``Store.get_call``, the exporter's ``selection`` (export, eval's
held-out prompts and shots, preference pairs) and therefore the dashboard's call view all see
the record as it was before it was cut.

Later steps (issue 15): rows of ``content`` that no call refers to any more (after a prune) are
not collected yet; a collector must leave alone parts newer than the writers' memory of stored
hashes (``Store`` forgets them every ``KNOWN_HASHES_LIMIT`` hashes; a time bound or a restart of
the writers is needed before a collected hash may be written again without its row).
"""

from __future__ import annotations

import hashlib
import logging
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

Parts = dict[str, Any]


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and REF_KEY in value


def externalize(body: Any, parts: Parts, min_bytes: int = MIN_PART_BYTES) -> Any:
    """``body`` with its large parts replaced by references, added to ``parts``; ``body``
    itself when nothing was cut (it is never changed in place)."""
    return Cutter(min_bytes, memo_bytes=0).cut(body, parts)


Redact = Callable[[Any], Any]
MEMO_BYTES = 32 * 1024 * 1024
"""What a ``Cutter`` remembers of the parts it has seen (their bytes before redaction)."""


class Cutter:
    """``externalize`` for the writer, remembering the parts it has cut: a part whose exact
    bytes it has seen already (the system prompt of every call of a feature) costs one
    ``orjson.dumps`` and a dict lookup, not its redaction nor its sha256 again.

    ``cut(body, redact)`` takes the parsed, not yet redacted request: each large part is redacted
    alone (redaction is per string, so a part redacted alone is the part redacted in its body),
    then hashed; the rest is left for the caller to redact. Parts are measured before
    redaction. One memo per ``redact`` function (a call's redaction kinds), cleared whole when it
    holds more than ``memo_bytes``.
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
        out: dict[str, Any] | None = None
        for key in WHOLE_KEYS:
            if key in body:
                ref = self._ref(body[key], parts, redact, memo)
                if ref is not None:
                    out = out if out is not None else dict(body)
                    out[key] = ref
        for key in LIST_KEYS:
            items = body.get(key)
            if not isinstance(items, list):
                continue
            new: list[Any] | None = None
            for index, item in enumerate(items):
                ref = self._ref(item, parts, redact, memo)
                if ref is not None:
                    new = new if new is not None else list(items)
                    new[index] = ref
            if new is not None:
                out = out if out is not None else dict(body)
                out[key] = new
        return out if out is not None else body

    def _ref(
        self,
        value: Any,
        parts: Parts,
        redact: Redact | None,
        memo: dict[bytes, tuple[str, Any]],
    ) -> dict[str, str] | None:
        if value is None or isinstance(value, bool | int | float):
            return None
        data = orjson.dumps(value)
        if len(data) < self.min_bytes and not _is_marker(value):
            return None
        known = memo.get(data)
        if known is None:
            stored = value
            stored_bytes = data
            if redact is not None:
                stored = redact(value)
                stored_bytes = orjson.dumps(stored)
            known = (hashlib.sha256(stored_bytes).hexdigest(), stored)
            size = self._sizes[redact] + len(data)
            if size > self.memo_bytes:
                memo.clear()
                size = len(data)
            self._sizes[redact] = size
            memo[data] = known
        digest, stored = known
        parts[digest] = stored
        return {REF_KEY: digest}


def _hash_of(value: Any) -> str | None:
    if _is_marker(value):
        digest = value[REF_KEY]
        if isinstance(digest, str):
            return digest
    return None


def references(body: Any) -> Iterable[str]:
    """The hashes a stored body refers to (at the places ``externalize`` cuts)."""
    if not isinstance(body, dict):
        return
    for key in WHOLE_KEYS:
        digest = _hash_of(body.get(key))
        if digest is not None:
            yield digest
    for key in LIST_KEYS:
        items = body.get(key)
        if isinstance(items, list):
            for item in items:
                digest = _hash_of(item)
                if digest is not None:
                    yield digest


def _put_back(value: Any, found: dict[str, Any]) -> Any:
    digest = _hash_of(value)
    if digest is None:
        return value
    if digest not in found:
        log.error("capture content %s is missing: the reference is left in place", digest)
        return value
    return found[digest]


def substitute(body: Any, found: dict[str, Any]) -> Any:
    """``body`` with each reference replaced by its part from ``found`` (hash -> part)."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key in WHOLE_KEYS:
        if key in out:
            out[key] = _put_back(out[key], found)
    for key in LIST_KEYS:
        items = out.get(key)
        if isinstance(items, list):
            out[key] = [_put_back(item, found) for item in items]
    return out


def _normalized_request(row: dict[str, Any]) -> Any:
    view = row.get("normalized")
    return view.get("request") if isinstance(view, dict) else None


async def fetch_parts(connection: AsyncConnection, hashes: Iterable[str]) -> dict[str, Any]:
    """The parts with these hashes, one query per ``RESOLVE_CHUNK`` of them."""
    wanted = sorted(set(hashes))
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), RESOLVE_CHUNK):
        chunk = wanted[start : start + RESOLVE_CHUNK]
        query = select(content.c.hash, content.c.body).where(content.c.hash.in_(chunk))
        for digest, body in (await connection.execute(query)).all():
            found[digest] = body
    return found


async def resolve_rows(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Put the parts back into ``rows`` (in place), and drop their ``content_refs`` key: the
    rows are then those the readers saw before the content store. One query per page."""
    targets = [row for row in rows if row.pop(FLAG, None)]
    if not targets:
        return
    hashes: set[str] = set()
    for row in targets:
        hashes.update(references(row.get("request")))
        hashes.update(references(_normalized_request(row)))
    found = await fetch_parts(connection, hashes)
    for row in targets:
        if "request" in row:
            row["request"] = substitute(row["request"], found)
        view = row.get("normalized")
        if isinstance(view, dict) and isinstance(view.get("request"), dict):
            row["normalized"] = {**view, "request": substitute(view["request"], found)}
