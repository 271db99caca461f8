"""Markdown tables for the benchmarks' reports: the table and the cells' number formats.

A figure that is missing (not measured, no run succeeded) is shown as ``-``.
"""

from __future__ import annotations

from collections.abc import Sequence

VERDICT_TEXT: dict[bool | None, str] = {True: "yes", False: "**no**", None: "-"}
"""A target's verdict in a table's cell: met, missed, not measured."""


def number(value: float | None, digits: int = 2, sign: bool = False) -> str:
    """``value`` to ``digits`` decimals (with its sign when ``sign``)."""
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def count(value: float | None) -> str:
    """``value`` rounded to a whole number, with thousands separators."""
    return "-" if value is None else f"{value:,.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines
