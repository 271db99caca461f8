"""The leak check: no e-mail address, phone number, card number or secret may reach a
training file, whatever the capture's redaction settings were when the call was stored.

``capture.redaction.Redactor.find`` looks for the same patterns the capture redacts; what it
finds in an example (message contents and names, tool-call arguments, tool definitions) drops
the example, or fails the export under ``--leak-check fail``.

What repeats across examples by design, the system prompts and the tool definitions, is
checked once: its result is remembered. The rest of an example (each call's own text) is
checked in one pass over its strings joined by NUL characters, not string by string: the
patterns' own cost is small next to the fixed cost of a pass, and none of them matches a NUL
or reads one as a word character, so no finding spans two strings and each string's findings
are the same as alone (the test suite compares the two on planted findings at every edge).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import orjson

from capture.redaction import ALL_KINDS, Redactor
from exporter.examples import Example

LeakMode = Literal["drop", "fail", "off"]
_REMEMBERED = 4096


_SEPARATOR = "\x00"


def _strings(example: Example) -> tuple[list[str], list[str]]:
    """(repeated, own): system prompts and tool definitions; every other string checked."""
    repeated: list[str] = []
    own: list[str] = []
    for message in example.messages:
        content = message.get("content")
        if isinstance(content, str):
            (repeated if message.get("role") == "system" else own).append(content)
        name = message.get("name")
        if isinstance(name, str):
            own.append(name)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            for value in (function.get("name"), function.get("arguments")):
                if isinstance(value, str):
                    own.append(value)
    if example.tools:
        repeated.append(orjson.dumps(example.tools).decode())
    return repeated, own


class LeakCheck:
    def __init__(self, kinds: tuple[str, ...] = ALL_KINDS) -> None:
        self._redactor = Redactor(kinds)
        self._remembered: dict[str, frozenset[str]] = {}
        self.found: Counter[str] = Counter()
        """Examples with a finding, by kind."""

    def _kinds(self, text: str) -> set[str]:
        return {finding.kind for finding in self._redactor.find(text)}

    def _remembered_kinds(self, text: str) -> frozenset[str]:
        kinds = self._remembered.get(text)
        if kinds is None:
            kinds = frozenset(self._kinds(text))
            if len(self._remembered) >= _REMEMBERED:
                self._remembered.clear()
            self._remembered[text] = kinds
        return kinds

    def kinds_in(self, example: Example) -> list[str]:
        """The kinds of personal data or secrets found in ``example``, each once (counted in
        ``found``)."""
        kinds = self.kinds_of(example)
        self.found.update(kinds)
        return kinds

    def kinds_of(self, example: Example) -> list[str]:
        """``kinds_in`` without counting them."""
        repeated, own = _strings(example)
        found = self._kinds(_SEPARATOR.join(own)) if own else set()
        for text in repeated:
            found |= self._remembered_kinds(text)
        return sorted(found)
