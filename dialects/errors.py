"""Errors between dialects: what cannot be translated, and error bodies in either shape.

``Untranslatable`` is raised by the request translators when a field the client sent has no
equivalent in the target dialect; ``field`` is the client's own path to it (``"n"``,
``"messages[2].content[0].type"``) so the gateway can answer 400 naming it.

Anthropic's error types by HTTP status follow its documentation (docs.anthropic.com/en/api/errors):
400 invalid_request_error (also "other 4XX status codes not listed"), 401 authentication_error,
403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error,
500 api_error, 529 overloaded_error. Anthropic does not document 503; it is mapped to
overloaded_error because OpenAI-compatible servers answer 503 when they are out of capacity
("the engine is currently overloaded"), the very condition 529 names; every other 5xx is
api_error. OpenAI-shaped errors made from Anthropic ones carry the Anthropic type as ``code``
and OpenAI's coarse type: invalid_request_error for 4xx, rate_limit_exceeded for 429 and
server_error for 5xx.
"""

from __future__ import annotations

from typing import Any

import orjson

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

# The reverse, for an error type met without a status (an error event in a stream).
_ANTHROPIC_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_MAX_MESSAGE = 2000  # a non-JSON upstream body (an HTML error page) is cut to this
_NOT_JSON = object()


class Untranslatable(ValueError):
    """A request field with no equivalent in the target dialect."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    known = _ANTHROPIC_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_status(error_type: str) -> int:
    """The HTTP status Anthropic answers an error type with (500 for a type it does not list)."""
    return _ANTHROPIC_STATUSES.get(error_type, 500)


def openai_error_type(status: int) -> str:
    """OpenAI's coarse error type for an HTTP status."""
    if status == 429:
        return "rate_limit_exceeded"
    return "server_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def anthropic_error_event(error_type: str, message: str) -> bytes:
    return b"event: error\ndata: " + anthropic_error_body(error_type, message) + b"\n\n"


def openai_error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def openai_error_to_anthropic(status: int, body: bytes) -> bytes:
    """An upstream's error body (OpenAI's shape, another, none) as Anthropic's, for ``status``."""
    message = _message_of(body, status)
    return anthropic_error_body(anthropic_error_type(status), message)


def anthropic_error_to_openai(status: int, body: bytes) -> bytes:
    """An upstream's error body (Anthropic's shape, another, none) as OpenAI's, for ``status``."""
    message = _message_of(body, status)
    code = _anthropic_type_in(body) or anthropic_error_type(status)
    return openai_error_body(message, openai_error_type(status), code)


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _message_of(body: bytes, status: int) -> str:
    """The human message in an error body, whatever its shape; a generic one when it has none."""
    parsed = _parse(body) if body else None
    found = _message_in(parsed)
    if found:
        return found
    if parsed is _NOT_JSON:
        text = body.decode("utf-8", "replace").strip()
        if text:
            return text[:_MAX_MESSAGE]
    return f"The upstream answered HTTP {status} without an error message."


def _message_in(parsed: Any) -> str | None:
    if not isinstance(parsed, dict):
        return parsed if isinstance(parsed, str) and parsed else None
    error = parsed.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        if message is not None and not isinstance(message, str):
            return orjson.dumps(message).decode()
    elif isinstance(error, str) and error:
        return error  # {"error": "..."}: some OpenAI-compatible servers
    for key in ("message", "detail"):  # vLLM's {"object": "error", "message"}, FastAPI's detail
        value = parsed.get(key)
        if isinstance(value, str) and value:
            return value
        if value is not None and not isinstance(value, str):
            return orjson.dumps(value).decode()
    return None


def _anthropic_type_in(body: bytes) -> str | None:
    parsed = _parse(body) if body else None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            error_type = error.get("type")
            if isinstance(error_type, str) and error_type:
                return error_type
    return None


def openai_error_from_anthropic_payload(payload: Any) -> dict[str, Any]:
    """OpenAI's ``{"error": {...}}`` for a parsed Anthropic error (a stream's error event)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    error_type = "api_error"
    message = "The upstream reported an error."
    if isinstance(error, dict):
        if isinstance(error.get("type"), str) and error["type"]:
            error_type = error["type"]
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
    status = anthropic_error_status(error_type)
    return {
        "error": {
            "message": message,
            "type": openai_error_type(status),
            "param": None,
            "code": error_type,
        }
    }


def anthropic_error_from_openai_payload(payload: Any) -> tuple[str, str]:
    """(Anthropic error type, message) for a parsed OpenAI error (a stream's error event)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    message = _message_in(payload) or "The upstream reported an error."
    if not isinstance(error, dict):
        return "api_error", message
    code, type_ = error.get("code"), error.get("type")
    if isinstance(code, str) and code in _ANTHROPIC_STATUSES:
        return code, message
    if isinstance(type_, str) and type_ in _ANTHROPIC_STATUSES:
        return type_, message
    if code == "rate_limit_exceeded" or type_ in ("requests", "tokens", "rate_limit_exceeded"):
        return "rate_limit_error", message
    if type_ == "invalid_request_error":
        return "invalid_request_error", message
    if isinstance(code, int) and 400 <= code < 600:  # vLLM puts the status in code
        return anthropic_error_type(code), message
    return "api_error", message
