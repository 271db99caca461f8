"""The leak check: no e-mail address, phone number, card number or secret may reach a
training file, whatever the capture's redaction settings were when the call was stored.

``capture.redaction.Redactor.find`` looks for the same patterns the capture redacts; what it
finds in an example (message contents and names, tool-call arguments, tool definitions) drops
the example, or fails the export under ``--leak-check fail``. Long strings that repeat across
examples (the system prompt above all) are checked once: their result is remembered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Literal

import orjson

from capture.redaction import ALL_KINDS, Redactor
from exporter.examples import Example

LeakMode = Literal["drop", "fail", "off"]
_REMEMBERED_LENGTH = 64
_REMEMBERED = 4096


def _strings(example: Example) -> Iterator[str]:
    for message in example.messages:
        for key in ("content", "name"):
            value = message.get(key)
            if isinstance(value, str):
                yield value
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            for value in (function.get("name"), function.get("arguments")):
                if isinstance(value, str):
                    yield value
    if example.tools:
        yield orjson.dumps(example.tools).decode()


class LeakCheck:
    def __init__(self, kinds: tuple[str, ...] = ALL_KINDS) -> None:
        self._redactor = Redactor(kinds)
        self._remembered: dict[str, frozenset[str]] = {}
        self.found: Counter[str] = Counter()
        """Examples with a finding, by kind."""

    def _kinds(self, text: str) -> frozenset[str]:
        if len(text) < _REMEMBERED_LENGTH:
            return frozenset(finding.kind for finding in self._redactor.find(text))
        kinds = self._remembered.get(text)
        if kinds is None:
            kinds = frozenset(finding.kind for finding in self._redactor.find(text))
            if len(self._remembered) >= _REMEMBERED:
                self._remembered.clear()
            self._remembered[text] = kinds
        return kinds

    def kinds_in(self, example: Example) -> list[str]:
        """The kinds of personal data or secrets found in ``example``, each once."""
        found: set[str] = set()
        for text in _strings(example):
            found |= self._kinds(text)
        kinds = sorted(found)
        self.found.update(kinds)
        return kinds
