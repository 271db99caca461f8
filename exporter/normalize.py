"""Canonical forms of an example: its duplicate key, its split key, its near-dup and prompt texts.

Text is normalised by Unicode NFKC, case folding and collapsing whitespace, so examples that
differ only in case, spacing or the Unicode form of a character count as the same. Tool-call
arguments and tool definitions are compared as JSON with sorted keys, not as strings.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache
from typing import Any

import orjson

from exporter.examples import Example, Message

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


@lru_cache(maxsize=4096)
def text(value: str) -> str:
    """``value`` normalised (remembered: an example's texts are normalised for its duplicate
    key, its split key and its compared words, and a system prompt for every example)."""
    if value.isascii():
        if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
            return value.lower()  # its only whitespace single spaces between words: as it is
        return " ".join(value.lower().split())
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return text(value)
    return value


def message(message: Message) -> list[Any]:
    content = message.get("content")
    calls = [
        [call["function"].get("name"), _arguments(call["function"].get("arguments"))]
        for call in message.get("tool_calls") or ()
    ]
    return [message["role"], text(content) if isinstance(content, str) else None, calls]


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps(value, option=_SORTED), digest_size=16).digest()


def exact_key(example: Example) -> bytes:
    """Equal for examples with the same normalised messages and the same tools."""
    return _digest([[message(m) for m in example.messages], example.tools])


def prompt_key(example: Example) -> bytes:
    """Equal for the same prompt, system messages aside (so a re-export with another system
    prompt treatment splits the same way)."""
    return _digest([message(m) for m in example.prompt if m["role"] != "system"])


def keys(example: Example) -> tuple[bytes, bytes]:
    """(``exact_key``, ``prompt_key``) of an example, each message normalised once."""
    normalized = [message(m) for m in example.messages]
    prompt = [form for form in normalized[:-1] if form[0] != "system"]
    return _digest([normalized, example.tools]), _digest(prompt)


def near_dup_text(example: Example) -> str:
    """The words compared for near-duplicates: every message but the system prompt (shared by
    most examples, it would make them all look alike), tool calls included."""
    return _words(example.messages)


def prompt_text(example: Example) -> str:
    """The words compared for the split's groups of similar prompts: the prompt's messages
    but the system prompt, tool calls included."""
    return _words(example.prompt)


def compared_texts(example: Example) -> tuple[str, str]:
    """(``near_dup_text``, ``prompt_text``) of an example, its parts gathered once. ASCII
    parts are normalised one by one (``text`` remembers each, usually from ``exact_key``) and
    joined: the same words as normalising them joined."""
    prompt_parts, answer_parts = _parts(example.prompt), _parts([example.answer])
    parts = prompt_parts + answer_parts
    if all(part.isascii() for part in parts):
        prompt_words = [normalized for part in prompt_parts if (normalized := text(part))]
        answer_words = [normalized for part in answer_parts if (normalized := text(part))]
        return " ".join(prompt_words + answer_words), " ".join(prompt_words)
    return text(" ".join(parts)), text(" ".join(prompt_parts))


def _words(messages: list[Message]) -> str:
    return text(" ".join(_parts(messages)))


def _parts(messages: list[Message]) -> list[str]:
    parts: list[str] = []
    for m in messages:
        if m["role"] == "system":
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        for call in m.get("tool_calls") or ():
            function = call["function"]
            parts.append(f"{function.get('name')} {function.get('arguments')}")
    return parts
