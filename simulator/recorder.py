"""The ring buffer of recent requests that tests read back through GET /_sim/requests.

An entry keeps the request's bytes as they came and parses them when the log is read, so a call
costs the simulator nothing more than an append. Reading never fails for what a client sent: an
entry whose body cannot be written back as JSON (nested beyond what orjson writes) is given
with ``"body": null`` and the text in ``"body_text"``, and strings that are not valid Unicode
(header bytes that are not UTF-8) are given with replacement characters.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from simulator.wire import loads_or_none

MAX_RECORDED = 200

_RAW = "_raw"
"""The key of an entry's request bytes (not shown)."""


class RequestLog:
    """The last ``maxlen`` requests, oldest first. Appending is O(1) and copies nothing big."""

    def __init__(self, maxlen: int = MAX_RECORDED) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def add(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: Any = None,
        *,
        raw: bytes | None = None,
    ) -> None:
        """Record a request: its ``body`` as given, or its ``raw`` bytes (parsed when read:
        the JSON value, or null for bytes that are not JSON)."""
        entry = {"method": method, "path": path, "query": query, "headers": headers, "body": body}
        if raw is not None:
            entry[_RAW] = raw
        self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        return [_shown(entry) for entry in self._entries]

    def dump(self) -> bytes:
        """The entries as a JSON array, whatever they hold."""
        entries = list(self._entries)
        shown = [_shown(entry) for entry in entries]
        try:
            return orjson.dumps(shown)
        except TypeError:  # orjson.JSONEncodeError: too deep, or a string with surrogates
            pass
        return b"[" + b",".join(_dump_one(e, s) for e, s in zip(entries, shown, strict=True)) + b"]"

    def clear(self) -> None:
        self._entries.clear()


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    raw = entry.get(_RAW)
    shown = {key: value for key, value in entry.items() if key != _RAW}
    if raw is not None:
        shown["body"] = loads_or_none(raw)
    return shown


def _dump_one(entry: dict[str, Any], shown: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(shown)
    except TypeError:
        pass
    safe: dict[str, Any] = {
        "method": _text(shown["method"]),
        "path": _text(shown["path"]),
        "query": _text(shown["query"]),
        "headers": {_text(k): _text(v) for k, v in shown["headers"].items()},
        "body": None,
    }
    try:
        orjson.dumps(shown["body"])
        safe["body"] = shown["body"]
    except TypeError:
        raw = entry.get(_RAW)
        if raw is not None:
            safe["body_text"] = raw.decode("utf-8", "replace")
        else:
            safe["body_text"] = _text(repr(shown["body"]))
    return orjson.dumps(safe)


def _text(value: Any) -> str:
    """``value`` as a string that can be written as UTF-8 (surrogates replaced)."""
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
