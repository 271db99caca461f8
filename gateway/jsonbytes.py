"""Reading and editing a JSON request body as the client's bytes, without re-serialising it.

The gateway changes at most two top-level fields of a body (``model``, and
``stream_options`` when it asks for usage on the client's behalf). Re-serialising the parsed body
would change everything else too: integers beyond 64 bits become floats (orjson parses them so),
``1.50`` becomes ``1.5``, escapes and whitespace change. So the new values are spliced into the
client's bytes at the spans of those keys' values, and every other byte goes upstream as it came.

Finding a top-level key is cheap in the common case: a key token can be written literally or
with ``\\u`` escapes, and a ``"`` that is not preceded by a backslash is always a string
delimiter in valid JSON, so a regex finds every key token spelled as that name at any depth. When
exactly one exists and the parsed body has the key, that is the top-level one. Otherwise (a nested
object with the same key, a duplicated top-level key) the top level is walked token by token.

Only call these on bytes that ``orjson.loads`` accepted: they rely on the JSON being valid.
"""

from __future__ import annotations

import re
from itertools import accumulate

import orjson

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCALAR = re.compile(rb"[^\s,\]}]+")
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPENING = frozenset(b"[{")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))

Span = tuple[int, int]


def nesting_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether the JSON in ``raw`` nests arrays and objects more than ``limit`` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the usual body: too few brackets to get there, whatever their order
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    steps = brackets.translate(_BRACKET_STEPS)
    return max(accumulate(step - 1 for step in steps), default=0) > limit


def _key_pattern(name: str) -> re.Pattern[bytes]:
    """Every JSON spelling of the key ``name`` (each character literal or ``\\u`` escaped)."""
    parts = []
    for char in name:
        code = f"{ord(char):04x}"
        escaped = "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in code)
        literal = re.escape(char.encode()).decode("latin-1")
        parts.append(f"(?:{literal}|\\\\u{escaped})")
    return re.compile(('"' + "".join(parts) + '"[ \\t\\r\\n]*:').encode("latin-1"))


_KEY_PATTERNS: dict[str, re.Pattern[bytes]] = {}


def _value_end(raw: bytes, start: int) -> int:
    """The end of the JSON value that starts at ``start``."""
    first = raw[start]
    if first == 0x22:  # '"'
        match = _STRING.match(raw, start)
        assert match is not None
        return match.end()
    if first not in _OPENING:
        match = _SCALAR.match(raw, start)
        assert match is not None
        return match.end()
    depth = 0
    for token in _TOKEN.finditer(raw, start):
        char = raw[token.start()]
        if char in _OPENING:
            depth += 1
        elif char != 0x22:
            depth -= 1
            if depth == 0:
                return token.end()
    raise ValueError("unbalanced JSON")


def _skip_whitespace(raw: bytes, at: int) -> int:
    match = _WHITESPACE.match(raw, at)
    assert match is not None
    return match.end()


def _walk_top_level(raw: bytes, name: str) -> list[Span]:
    """The spans of every value of ``name`` in the top-level object, by walking its keys."""
    spans: list[Span] = []
    at = _skip_whitespace(raw, 0) + 1  # past '{'
    while True:
        at = _skip_whitespace(raw, at)
        if raw[at] == 0x7D:  # '}'
            return spans
        key = _STRING.match(raw, at)
        assert key is not None
        at = _skip_whitespace(raw, key.end()) + 1  # past ':'
        start = _skip_whitespace(raw, at)
        end = _value_end(raw, start)
        if orjson.loads(key.group()) == name:
            spans.append((start, end))
        at = _skip_whitespace(raw, end)
        if raw[at] == 0x2C:  # ','
            at += 1


def top_level_value_spans(raw: bytes, name: str) -> list[Span]:
    """Where each value of the top-level key ``name`` lies in ``raw`` (a JSON object).

    ``name`` must be a key of the top-level object (the parsed body says whether it is): a
    single key of that name anywhere is then that one. More than one span when the client
    repeated the key.
    """
    pattern = _KEY_PATTERNS.get(name)
    if pattern is None:
        pattern = _KEY_PATTERNS[name] = _key_pattern(name)
    # A '"' after a backslash is escaped, inside a string: not the start of a key.
    keys = [m for m in pattern.finditer(raw) if m.start() == 0 or raw[m.start() - 1] != 0x5C]
    if len(keys) != 1:
        return _walk_top_level(raw, name)  # the name is a key more than once: find which
    start = _skip_whitespace(raw, keys[0].end())
    return [(start, _value_end(raw, start))]


def splice(raw: bytes, edits: list[tuple[Span, bytes]]) -> bytes:
    """``raw`` with each span replaced by its bytes (spans must not overlap)."""
    out = []
    at = 0
    for (start, end), value in sorted(edits, key=lambda edit: edit[0]):
        out.append(raw[at:start])
        out.append(value)
        at = end
    out.append(raw[at:])
    return b"".join(out)


def first_member(raw: bytes, member: bytes) -> tuple[Span, bytes]:
    """The edit that makes ``member`` (``"key":value``) the first member of ``raw``'s object."""
    inside = raw.index(b"{") + 1
    separator = b"" if raw[_skip_whitespace(raw, inside)] == 0x7D else b","
    return (inside, inside), member + separator
