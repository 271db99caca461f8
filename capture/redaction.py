"""Redaction of personal data and secrets in captured text, before it is stored.

``Redactor(kinds).redact(value)`` replaces, in every string of a parsed JSON value (message
contents, tool arguments, object keys), what looks like

- ``email``: an e-mail address -> ``[EMAIL]``
- ``phone``: a phone number in international (``+44 20 7946 0958``) or US format
  (``(415) 555-2671``, ``415-555-2671``, ``415.555.2671``) -> ``[PHONE]``. Bare digit runs are
  left alone, so years, order ids, amounts and decimals survive.
- ``card``: a payment card number, 13-19 digits, plain or grouped by spaces or dashes, starting
  with a card network's digit (2-6) and with a valid Luhn check digit -> ``[CARD]``
- ``secret``: an API key or token: ``sk-...`` / ``sk-proj-...`` (OpenAI, Anthropic),
  ``sk_live_...`` (Stripe), ``Bearer <token>``, AWS ``AKIA...``/``ASIA...`` ids, GitHub
  ``ghp_...``/``github_pat_...``, Slack ``xox?-...``, Google ``AIza...``, and random-looking
  values of 16+ characters after a ``key``/``token``/``secret``/``password``/``auth`` label
  -> ``[SECRET]`` (for ``Bearer`` and labels, only the value is replaced)

Speed: Python's ``re`` scans fast only for patterns that begin with a literal, so every secret
pattern begins with one and checks the character before it in code; e-mail addresses are found
from their ``@``; phones and cards are looked for only in strings whose digit "shape" (digits
mapped to ``#``) has a candidate such as ``###-####`` or 13 digits in a row. Ordinary prose costs
a few microseconds per kilobyte.

``Redactor.find`` reports what would be replaced without changing anything (the exporter checks
with it that nothing slipped through).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

RedactionKind = Literal["email", "phone", "card", "secret"]
ALL_KINDS: Final[tuple[RedactionKind, ...]] = get_args(RedactionKind)
PLACEHOLDERS: Final[dict[RedactionKind, str]] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "secret": "[SECRET]",
}

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Finding:
    """Something ``Redactor.find`` would redact: its kind and where it is in the text."""

    kind: RedactionKind
    start: int
    end: int


# --- checks ---------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def looks_random(value: str) -> bool:
    """16+ characters of at least two classes and high entropy: a key, not a word or slug."""
    if len(value) < 16:
        return False
    classes = (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
    )
    if classes < 2:
        return False
    counts: dict[str, int] = {}
    for char in value:
        counts[char] = counts.get(char, 0) + 1
    size = len(value)
    entropy = -sum(n / size * math.log2(n / size) for n in counts.values())
    return entropy >= 3.0


def _word_before(text: str, start: int, chars: str = "-") -> bool:
    """Is the character before ``start`` part of a word (so a match there is not a token)?"""
    if start == 0:
        return False
    before = text[start - 1]
    return before.isalnum() or before == "_" or before in chars


# --- e-mail ---------------------------------------------------------------------------------

_LOCAL_TAIL = re.compile(r"[\w.%+\-]+\Z")
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,}\b"
)


def _emails(text: str) -> Iterator[Span]:
    at = text.find("@")
    while at >= 0:
        local = _LOCAL_TAIL.search(text, max(0, at - 64), at)
        domain = _DOMAIN.match(text, at + 1) if local is not None else None
        if local is not None and domain is not None:
            yield local.start(), domain.end()
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


# --- phones and cards -----------------------------------------------------------------------

_SHAPE = bytes.maketrans(b"0123456789", b"##########")
_PHONE_SHAPES = (b"+#", b"###-####", b"###.####", b"### ####")
_CARD_SHAPES = (b"#############", b"#### ####", b"####-####")

_SEP = r"(?:[ .\-]|\) ?| ?\()?"
_PHONE = re.compile(
    # international: + country code, 7 to 15 digits in all, separators between them
    rf"(?<![\w+])\+\d(?:{_SEP}\d){{6,14}}(?!\d)"
    # US: optional 1, area code (in parentheses or not), 3 + 4 digits, always separated
    r"|(?<![\w.+\-(])(?:1[ .\-]?)?(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?!\w|[.\-]\d)"
)
_CARD = re.compile(
    r"(?<![\w.\-])[2-6](?:\d{12,18}"
    r"|\d{3}(?P<s>[ \-])\d{4}(?P=s)\d{4}(?P=s)\d{1,4}(?:(?P=s)\d{1,3})?"
    r"|\d{3}(?P<a>[ \-])\d{6}(?P=a)\d{4,5})"
    r"(?![\w\-]|\.\d)"
)


def _shape(text: str) -> bytes:
    return text.encode("utf-8", "replace").translate(_SHAPE)


def _may_hold_numbers(shape: bytes) -> bool:
    """Could the text of ``shape`` hold a phone or card number (4 digits in a row or ``+#``)?"""
    return b"####" in shape or b"+#" in shape


def _phones(text: str, shape: bytes) -> Iterator[Span]:
    if not any(candidate in shape for candidate in _PHONE_SHAPES):
        return
    for match in _PHONE.finditer(text):
        if 7 <= sum(c.isdigit() for c in match.group()) <= 15:
            yield match.span()


def _cards(text: str, shape: bytes) -> Iterator[Span]:
    if not any(candidate in shape for candidate in _CARD_SHAPES):
        return
    for match in _CARD.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            yield match.span()


# --- secrets --------------------------------------------------------------------------------

_SK = re.compile(r"sk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")
_STRIPE = re.compile(r"k_(?:live|test)_[A-Za-z0-9]{16,}")
_CAPITAL_A = re.compile(
    r"A(?:KIA[A-Z0-9]{16}(?![A-Z0-9])|SIA[A-Z0-9]{16}(?![A-Z0-9])|Iza[0-9A-Za-z_\-]{35})"
)
_GITHUB = re.compile(r"gh(?:[pousr]_[A-Za-z0-9]{36,}|ithub_pat_\w{40,})")
_SLACK = re.compile(r"xox[abposr]-[A-Za-z0-9\-]{10,}")
_BEARER = re.compile(r"earer\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)")
_LABELLED = tuple(
    re.compile(sign + r"\s*[\"']?(?P<v>[A-Za-z0-9+/_\-.=]{16,})") for sign in (":", "=")
)
_LABEL_TAIL = re.compile(
    r"(?i:api[_\-]?key|apikey|access[_\-]?key|secret|token|password|passwd|auth)"
    r"[A-Za-z_\-]*[\"']?\s*\Z"
)


def _secrets(text: str) -> Iterator[Span]:
    # Each pattern runs only where the text holds the literal it starts with: a substring test
    # is some twenty times cheaper than a pattern's pass, and most text holds none of them.
    if len(text) < 16:
        return
    if "sk-" in text:
        for match in _SK.finditer(text):
            if not _word_before(text, match.start()) and looks_random(match.group()):
                yield match.span()
    if "k_live_" in text or "k_test_" in text:
        for match in _STRIPE.finditer(text):
            start = match.start() - 1
            if start >= 0 and text[start] in "srp" and not _word_before(text, start, ""):
                yield start, match.end()
    if "AKIA" in text or "ASIA" in text or "AIza" in text:
        for match in _CAPITAL_A.finditer(text):
            if not _word_before(text, match.start(), ""):
                yield match.span()
    for mark, pattern in (("gh", _GITHUB), ("xox", _SLACK)):
        if mark in text:
            for match in pattern.finditer(text):
                if not _word_before(text, match.start(), ""):
                    yield match.span()
    if "earer" in text:
        for match in _BEARER.finditer(text):
            start = match.start() - 1
            if (
                start >= 0
                and text[start] in "Bb"
                and not _word_before(text, start, "")
                and looks_random(match.group("v"))
            ):
                yield match.span("v")
    for sign, pattern in zip(":=", _LABELLED, strict=True):
        if sign not in text:
            continue
        for match in pattern.finditer(text):
            start = match.start()
            value = match.group("v")
            if _LABEL_TAIL.search(text, max(0, start - 40), start) and looks_random(value):
                yield match.span("v")


# --- the redactor ---------------------------------------------------------------------------

_MEMO_LENGTH = 64
_MEMO_SIZE = 8192
"""Short strings repeat across calls (roles, model names, object types, tool names): their
redaction is remembered, up to this many, then the memo starts over."""

_TEXT_OR_CONTAINER: Final = frozenset((str, dict, list))
_MIN_LENGTH = 6
"""Nothing redactable is shorter (``a@b.io``)."""


def _replace(text: str, spans: list[Span], placeholder: str) -> str:
    spans.sort()
    parts: list[str] = []
    position = 0
    for start, end in spans:
        if start < position:
            continue  # overlapping matches of one kind: the first one wins
        parts.append(text[position:start])
        parts.append(placeholder)
        position = end
    parts.append(text[position:])
    return "".join(parts)


class Redactor:
    """Replaces the chosen kinds of personal data and secrets by placeholders.

    Not for use from several threads at once (it keeps a memo of short strings).
    """

    def __init__(self, kinds: Iterable[str] = ALL_KINDS) -> None:
        wanted = set(kinds)
        unknown = wanted - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds: {sorted(unknown)}")
        self.kinds: tuple[RedactionKind, ...] = tuple(k for k in ALL_KINDS if k in wanted)
        self._secret = "secret" in wanted
        self._email = "email" in wanted
        self._card = "card" in wanted
        self._phone = "phone" in wanted
        self._memo: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def redact_text(self, text: str) -> str:
        size = len(text)
        if size < _MIN_LENGTH:
            return text
        if size > _MEMO_LENGTH:
            return self._redact(text)
        memo = self._memo
        redacted = memo.get(text)
        if redacted is None:
            redacted = self._redact(text)
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[text] = redacted
        return redacted

    def _redact(self, text: str) -> str:
        # Secrets first (keys hold digit runs and may hold an '@'), cards before phones.
        if self._secret:
            spans = list(_secrets(text))
            if spans:
                text = _replace(text, spans, "[SECRET]")
        if self._email and "@" in text:
            spans = list(_emails(text))
            if spans:
                text = _replace(text, spans, "[EMAIL]")
        if self._card or self._phone:
            shape = _shape(text)
            if _may_hold_numbers(shape):
                if self._card:
                    spans = list(_cards(text, shape))
                    if spans:
                        text = _replace(text, spans, "[CARD]")
                        shape = _shape(text)
                if self._phone:
                    spans = list(_phones(text, shape))
                    if spans:
                        text = _replace(text, spans, "[PHONE]")
        return text

    def redact(self, value: Any) -> Any:
        """``value`` with every string redacted. Lists and dicts are changed in place."""
        if not self.kinds:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if not isinstance(value, dict | list):
            return value
        redact_text = self.redact_text
        stack: list[dict[str, Any] | list[Any]] = [value]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                renamed = False
                for key, item in node.items():
                    kind = type(item)
                    if kind is str:
                        if len(item) >= _MIN_LENGTH:
                            node[key] = redact_text(item)
                    elif kind is dict or kind is list:
                        stack.append(item)
                    # keys repeat (role, content, ...): after the first time, a memo lookup
                    if len(key) >= _MIN_LENGTH and not renamed:
                        renamed = redact_text(key) != key
                if renamed:
                    items = [(redact_text(k), v) for k, v in node.items()]
                    node.clear()
                    node.update(items)
            else:
                if len(node) > 8 and not _TEXT_OR_CONTAINER.intersection(map(type, node)):
                    continue  # e.g. token ids, numbers only
                for index, item in enumerate(node):
                    kind = type(item)
                    if kind is str:
                        if len(item) >= _MIN_LENGTH:
                            node[index] = redact_text(item)
                    elif kind is dict or kind is list:
                        stack.append(item)
        return value

    def find(self, text: str) -> list[Finding]:
        """What this redactor would replace in ``text``, by position."""
        if len(text) < _MIN_LENGTH:
            return []
        found: list[Finding] = []
        if self._secret:
            found.extend(Finding("secret", *span) for span in _secrets(text))
        if self._email and "@" in text:
            found.extend(Finding("email", *span) for span in _emails(text))
        shape = _shape(text) if self._card or self._phone else b""
        if _may_hold_numbers(shape):  # what every card and phone shape holds
            if self._card:
                found.extend(Finding("card", *span) for span in _cards(text, shape))
            if self._phone:
                found.extend(Finding("phone", *span) for span in _phones(text, shape))
        found.sort(key=lambda f: (f.start, f.end))
        return found

    def find_json(self, value: Any) -> list[Finding]:
        """``find`` over every string (object keys included) of a parsed JSON value."""
        found: list[Finding] = []
        stack: list[Any] = [value]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                found.extend(self.find(node))
            elif isinstance(node, dict):
                stack.extend(node.keys())
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return found
