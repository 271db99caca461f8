"""The simulator's token rule, one definition shared by every endpoint.

A token is a run of word characters or a single other non-space character, together with the
whitespace before it. So ``"Hello, world."`` is four tokens: ``"Hello"``, ``","``, ``" world"``,
``"."``. Joining a text's tokens gives the text back (less trailing whitespace), which is what
lets a stream send one token per chunk and still add up to the non-streamed answer.

Prompt tokens follow OpenAI's chat accounting in spirit: the tokens of every message's text
(content, text parts, names, tool-call names and arguments) plus 3 per message plus 3 for the
reply's priming, plus the tokens of the tools' JSON when tools are sent.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])")
PER_MESSAGE = 3
PER_REPLY = 3


def split_tokens(text: str) -> list[str]:
    """The text's tokens, each with its leading whitespace."""
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def count_content(content: Any) -> int:
    """Tokens of a message content: a string, or a list of parts with text."""
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += count_tokens(text)
            elif isinstance(part, str):
                total += count_tokens(part)
        return total
    return 0


def count_message(message: Any) -> int:
    if not isinstance(message, dict):
        return PER_MESSAGE
    total = PER_MESSAGE + count_content(message.get("content"))
    name = message.get("name")
    if isinstance(name, str):
        total += count_tokens(name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += count_content(function.get("name"))
                total += count_content(function.get("arguments"))
    return total


def count_prompt(messages: list[Any], tools: Any = None) -> int:
    total = PER_REPLY + sum(count_message(message) for message in messages)
    if tools:
        total += count_tokens(orjson.dumps(tools).decode())
    return total


def count_input(value: Any) -> int:
    """Tokens of an embeddings/completions input: text, texts, token ids or lists of them."""
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return len(value)
        return sum(count_input(item) for item in value)
    return 0
