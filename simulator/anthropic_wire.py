"""Anthropic's wire shapes: its error answer, its request ids, its event framing.

An error is ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the status
Anthropic documents for its type, and every answer carries a ``request-id`` header
(``req_...``), errors included. A stream frames each event as ``event: NAME`` then
``data: JSON`` and a blank line, the event's ``type`` repeating its name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson

from simulator.wire import ShapedError

MESSAGES_PATH = "/v1/messages"

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error type for each status it documents; other 4xx are invalid_request_error
and other 5xx api_error."""

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def is_anthropic_path(path: str) -> bool:
    return path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")


def base62(length: int, source: bytes | None = None) -> str:
    """``length`` base-62 characters, from ``source`` bytes when given, else random."""
    data = source if source is not None else os.urandom(length)
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


def new_request_id() -> str:
    return "req_011" + base62(24)


def new_message_id() -> str:
    return "msg_01" + base62(22)


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind or error_type(status), "message": message}}


class AnthropicError(ShapedError):
    """An error answer in Anthropic's shape, with a fresh ``request-id``; raise it to send it."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status
        request_id = new_request_id()
        payload = {**error_body(status, message, kind), "request_id": request_id}
        super().__init__(
            headers={**(headers or {}), "request-id": request_id},
            text=orjson.dumps(payload).decode(),
            content_type="application/json",
        )


class Invalid(AnthropicError):
    """A 400 invalid_request_error."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def event(name: str, payload: dict[str, Any]) -> bytes:
    """One named event; ``payload`` already holds ``"type": name``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(kind: str, message: str) -> bytes:
    return event("error", error_body(529 if kind == "overloaded_error" else 500, message, kind))
