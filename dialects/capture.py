"""One shape for every captured call: the OpenAI chat view the exporter reads.

``chat_view`` turns a call's request and response, in whichever dialect each was spoken, into
``{"request": <OpenAI chat request>, "response": <chat.completion>}``; None when both are
OpenAI's already (nothing to normalise). It never raises: a half that cannot be translated is
None, and ``"error"`` says why. The request's own ``model`` is kept, and the
``stream_options`` the translation adds for usage is left out (the client did not send it).
A response may be given parsed or as the raw JSON bytes; an Anthropic error body becomes
OpenAI's error shape.
"""

from __future__ import annotations

from typing import Any

import orjson

from dialects.errors import openai_error_from_anthropic_payload
from dialects.requests import anthropic_to_openai_chat
from dialects.responses import anthropic_message_to_openai_chat

_DIALECTS = ("openai", "anthropic")


def chat_view(
    request: dict[str, Any], request_dialect: str, response: Any, response_dialect: str
) -> dict[str, Any] | None:
    """The normalised (OpenAI chat) view of a call, or None when it is OpenAI's on both sides."""
    if request_dialect == "openai" and response_dialect == "openai":
        return None
    errors: list[str] = []
    view: dict[str, Any] = {
        "request": _request_view(request, request_dialect, errors),
        "response": _response_view(response, response_dialect, errors),
    }
    if errors:
        view["error"] = "; ".join(errors)
    return view


def _request_view(request: Any, dialect: str, errors: list[str]) -> dict[str, Any] | None:
    if dialect not in _DIALECTS:
        errors.append(f"request: unknown dialect {dialect!r}")
        return None
    if not isinstance(request, dict):
        errors.append("request: not a JSON object")
        return None
    if dialect == "openai":
        return request
    model = request.get("model")
    try:
        view = anthropic_to_openai_chat(request, model=model if isinstance(model, str) else "")
    except ValueError as exc:  # Untranslatable, and any malformed value met on the way
        errors.append(f"request: {exc}")
        return None
    except Exception as exc:  # a bug of ours must not lose the capture
        errors.append(f"request: {type(exc).__name__}: {exc}")
        return None
    view.pop("stream_options", None)
    return view


def _response_view(response: Any, dialect: str, errors: list[str]) -> dict[str, Any] | None:
    if response is None:
        return None
    if dialect not in _DIALECTS:
        errors.append(f"response: unknown dialect {dialect!r}")
        return None
    if isinstance(response, bytes | bytearray | memoryview | str):
        try:
            response = orjson.loads(response)
        except orjson.JSONDecodeError:
            errors.append("response: not JSON")
            return None
    if not isinstance(response, dict):
        errors.append("response: not a JSON object")
        return None
    if dialect == "openai":
        return response
    kind = response.get("type")
    if kind == "error":
        return openai_error_from_anthropic_payload(response)
    if kind != "message":
        errors.append(f"response: not an Anthropic message (type {kind!r})")
        return None
    try:
        return anthropic_message_to_openai_chat(response)
    except Exception as exc:  # never lose the capture over a view
        errors.append(f"response: {type(exc).__name__}: {exc}")
        return None
