"""How Anthropic checks one value of a Messages API request, in its validator's words: a field's
type and range (``Input should be a valid integer``), required and unknown fields (``Field
required``, ``Extra inputs are not permitted``), a block's ``type`` tag among those allowed, and
each content block (text, image, document, search result, tool use and result, thinking) with
its sources and ``cache_control``. Every fault is an ``Invalid`` naming the field by its path
(``messages.0.content.1.source.media_type: ...``). ``anthropic_request`` checks the request
around them."""

from __future__ import annotations

import binascii
from typing import Any, NoReturn

import orjson

from simulator.anthropic_wire import Invalid

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def fail(path: str, message: str) -> NoReturn:
    raise Invalid(f"{path}: {message}")


def _tags(tags: tuple[str, ...]) -> str:
    return ", ".join(f"'{tag}'" for tag in tags)


def obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, "Input should be a valid dictionary or object")
    return value


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        fail(path, "Input should be a valid string")
    return value


def integer(value: Any, path: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, "Input should be a valid integer")
    if minimum is not None and value < minimum:
        fail(path, f"Input should be greater than or equal to {minimum}")
    return value


def number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(path, "Input should be a valid number")
    if value < low:
        fail(path, f"Input should be greater than or equal to {low:g}")
    if value > high:
        fail(path, f"Input should be less than or equal to {high:g}")
    return float(value)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, "Input should be a valid boolean")
    return value


def array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        fail(path, "Input should be a valid list")
    return value


def keys(
    value: dict[str, Any], path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    for name in required:
        if name not in value:
            fail(f"{path}.{name}" if path else name, "Field required")
    for name in value:
        if name not in required and name not in optional:
            fail(f"{path}.{name}" if path else name, "Extra inputs are not permitted")


def tagged(value: Any, path: str, tags: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    block = obj(value, path)
    tag = block.get("type")
    if tag is None:
        fail(f"{path}.type", "Field required")
    if tag not in tags:
        shown = tag if isinstance(tag, str) else orjson.dumps(tag).decode()[:40]
        fail(
            f"{path}.type",
            f"Input tag '{shown}' found using 'type' does not match any of the expected tags: "
            + _tags(tags),
        )
    return block, tag


def cache_ttl(value: Any, path: str) -> str:
    control = obj(value, path)
    keys(control, path, ("type",), ("ttl",))
    if control["type"] != "ephemeral":
        fail(f"{path}.type", "Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        fail(f"{path}.ttl", "Input should be '5m' or '1h'")
    return str(ttl)


def check_cache_control(block: dict[str, Any], path: str) -> None:
    if block.get("cache_control") is not None:
        cache_ttl(block["cache_control"], f"{path}.cache_control")


def _text_block(block: dict[str, Any], path: str) -> None:
    keys(block, path, ("type", "text"), ("cache_control", "citations"))
    if not string(block["text"], f"{path}.text"):
        fail(f"{path}.text", "text content blocks must be non-empty")
    check_cache_control(block, path)


def _base64(data: Any, path: str) -> None:
    try:
        binascii.a2b_base64(string(data, path), strict_mode=True)
    except binascii.Error:
        fail(path, "The data is not valid base64.")


def _image_block(block: dict[str, Any], path: str) -> None:
    keys(block, path, ("type", "source"), ("cache_control", "transformations"))
    where = f"{path}.source"
    source, kind = tagged(block["source"], where, ("base64", "url", "file"))
    if kind == "base64":
        keys(source, f"{where}.base64", ("type", "media_type", "data"))
        if source["media_type"] not in IMAGE_TYPES:
            fail(f"{where}.base64.media_type", "Input should be " + _or(IMAGE_TYPES))
        _base64(source["data"], f"{where}.base64.data")
    elif kind == "url":
        keys(source, f"{where}.url", ("type", "url"))
        string(source["url"], f"{where}.url.url")
    else:
        keys(source, f"{where}.file", ("type", "file_id"))
        string(source["file_id"], f"{where}.file.file_id")
    check_cache_control(block, path)


def _or(options: tuple[str, ...]) -> str:
    quoted = [f"'{option}'" for option in options]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def _document_block(block: dict[str, Any], path: str) -> None:
    keys(block, path, ("type", "source"), ("cache_control", "citations", "context", "title"))
    where = f"{path}.source"
    tags = ("base64", "text", "content", "url", "file")
    source, kind = tagged(block["source"], where, tags)
    if kind == "base64":
        keys(source, f"{where}.base64", ("type", "media_type", "data"))
        if source["media_type"] != "application/pdf":
            fail(f"{where}.base64.media_type", "Input should be 'application/pdf'")
        _base64(source["data"], f"{where}.base64.data")
    elif kind == "text":
        keys(source, f"{where}.text", ("type", "media_type", "data"))
        if source["media_type"] != "text/plain":
            fail(f"{where}.text.media_type", "Input should be 'text/plain'")
        string(source["data"], f"{where}.text.data")
    elif kind == "content":
        keys(source, f"{where}.content", ("type", "content"))
        inner = source["content"]
        if not isinstance(inner, str):
            for index, item in enumerate(array(inner, f"{where}.content.content")):
                check_block(item, f"{where}.content.content.{index}", ("text", "image"))
    elif kind == "url":
        keys(source, f"{where}.url", ("type", "url"))
        string(source["url"], f"{where}.url.url")
    else:
        keys(source, f"{where}.file", ("type", "file_id"))
        string(source["file_id"], f"{where}.file.file_id")
    for name in ("title", "context"):
        if block.get(name) is not None:
            string(block[name], f"{path}.{name}")
    check_cache_control(block, path)


def _search_result_block(block: dict[str, Any], path: str) -> None:
    keys(block, path, ("type", "content", "source", "title"), ("cache_control", "citations"))
    string(block["source"], f"{path}.source")
    string(block["title"], f"{path}.title")
    for index, item in enumerate(array(block["content"], f"{path}.content")):
        check_block(item, f"{path}.content.{index}", ("text",))
    check_cache_control(block, path)


def check_block(value: Any, path: str, tags: tuple[str, ...]) -> dict[str, Any]:
    block, kind = tagged(value, path, tags)
    if kind == "text":
        _text_block(block, path)
    elif kind == "image":
        _image_block(block, path)
    elif kind == "document":
        _document_block(block, path)
    elif kind == "search_result":
        _search_result_block(block, path)
    elif kind == "tool_use":
        keys(block, path, ("type", "id", "name", "input"), ("cache_control", "caller"))
        if not string(block["id"], f"{path}.id"):
            fail(f"{path}.id", "String should have at least 1 character")
        string(block["name"], f"{path}.name")
        obj(block["input"], f"{path}.input")
        check_cache_control(block, path)
    elif kind == "tool_result":
        keys(block, path, ("type", "tool_use_id"), ("content", "is_error", "cache_control"))
        string(block["tool_use_id"], f"{path}.tool_use_id")
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            tags_in = ("text", "image", "document", "search_result")
            for index, item in enumerate(array(content, f"{path}.content")):
                check_block(item, f"{path}.content.{index}", tags_in)
        if block.get("is_error") is not None:
            boolean(block["is_error"], f"{path}.is_error")
        check_cache_control(block, path)
    elif kind == "thinking":
        keys(block, path, ("type", "thinking", "signature"))
        string(block["thinking"], f"{path}.thinking")
        string(block["signature"], f"{path}.signature")
    elif kind == "redacted_thinking":
        keys(block, path, ("type", "data"))
        string(block["data"], f"{path}.data")
    return block
