"""OpenAI's wire shapes shared by the endpoints: JSON responses, errors, SSE framing, usage.

``ShapedError`` is the base of every dialect's error answer (OpenAI's here, Anthropic's and
Azure's in their modules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

SYSTEM_FINGERPRINT = "fp_simulated"
SSE_DONE = b"data: [DONE]\n\n"
MAX_NESTING = 128
"""How deep arrays and objects may nest in a request body (as at the gateway): deeper bodies
are refused with a 400, since what they hold could not be written back as JSON (orjson writes
at most 254 levels)."""


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        headers=headers,
        content_type="application/json",
    )


class ShapedError(web.HTTPException):
    """An error answer already in its dialect's shape: the error middleware sends it as it is."""


class OpenAIError(ShapedError):
    """An error answer in OpenAI's shape; raise it from a handler to send it."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status
        error = {"message": message, "type": error_type, "param": param, "code": code}
        super().__init__(
            headers=headers,
            text=orjson.dumps({"error": error}).decode(),
            content_type="application/json",
        )


class InvalidRequest(OpenAIError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, "invalid_request_error", param, code)


class NotJSON(InvalidRequest):
    def __init__(self) -> None:
        super().__init__(
            "We could not parse the JSON body of your request. (HINT: This likely means"
            " you aren't using your HTTP library correctly. The OpenAI API expects a JSON"
            " payload, but what was sent was not valid JSON.)"
        )


class NestedTooDeep(InvalidRequest):
    def __init__(self) -> None:
        super().__init__(
            f"The request body nests arrays and objects more than {MAX_NESTING} levels deep.",
            None,
            "nesting_too_deep",
        )


def loads_or_none(raw: bytes) -> Any:
    """The JSON value of ``raw``; None when it is empty or not JSON (bad UTF-8 included)."""
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # also for nesting beyond orjson's own 1024 levels
        return None


def nested_deeper_than(raw: bytes, value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` (parsed from ``raw``) nests arrays and objects beyond ``limit``."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the usual body: too few brackets to get there, whatever their order
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, else the 400 OpenAI gives (not JSON, not an object, or
    nested too deep)."""
    body = loads_or_none(raw)
    if not isinstance(body, dict):
        raise NotJSON()
    if nested_deeper_than(raw, body):
        raise NestedTooDeep()
    return body


class MissingParameter(InvalidRequest):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
        )


def sse(payload: Any) -> bytes:
    """One server-sent event with compact JSON, as OpenAI frames chat and completion chunks."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_named(event: str, payload: Any) -> bytes:
    """A named event, as the Responses API frames them."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def positive_int(body: Mapping[str, Any], name: str, maximum: int | None = None) -> int | None:
    """An optional integer in 1..maximum from the body; InvalidRequest for anything else."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            f"Invalid '{name}': expected an integer greater than or equal to 1.",
            name,
            "invalid_value",
        )
    if maximum is not None and value > maximum:
        raise InvalidRequest(
            f"Invalid '{name}': expected at most {maximum}.", name, "integer_above_max_value"
        )
    return value
