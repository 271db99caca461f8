"""A request field's value checked for the translators (``dialects.requests``): the number or
integer it must be, else ``Untranslatable`` naming the field."""

from __future__ import annotations

from typing import Any

from dialects.errors import Untranslatable


def number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untranslatable(path, "must be a number")
    return value


def integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Untranslatable(path, "must be an integer")
    return value
