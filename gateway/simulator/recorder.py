"""The ring buffer of recent requests that tests read back through GET /_sim/requests."""

from __future__ import annotations

from collections import deque
from typing import Any

MAX_RECORDED = 200


class RequestLog:
    """The last ``maxlen`` requests, oldest first. Appending is O(1) and copies nothing big."""

    def __init__(self, maxlen: int = MAX_RECORDED) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def add(self, method: str, path: str, query: str, headers: dict[str, str], body: Any) -> None:
        self._entries.append(
            {"method": method, "path": path, "query": query, "headers": headers, "body": body}
        )

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
