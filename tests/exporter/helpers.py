"""Running the export in-process on a store made by ``factory``."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, Literal

import orjson

from exporter.database import open_store
from exporter.pair_judge import PairJudge
from exporter.pipeline import ExportOptions, ExportResult, run_export
from exporter.preference import run_preference_export


def export(url: str, out: Path | None = None, **options: Any) -> ExportResult:
    chosen = dataclasses.replace(ExportOptions(out_dir=out), **options)

    async def go() -> ExportResult:
        async with open_store(url) as store:
            return await run_export(store.engine, chosen)

    return asyncio.run(go())


def export_pairs(
    url: str,
    out: Path | None,
    source: Literal["feedback", "shadow"],
    judge: PairJudge | None = None,
    **options: Any,
) -> ExportResult:
    chosen = dataclasses.replace(ExportOptions(out_dir=out), **options)

    async def go() -> ExportResult:
        async with open_store(url) as store:
            return await run_preference_export(store.engine, chosen, source, judge=judge)

    return asyncio.run(go())


def read_rows(*paths: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in paths:
        found += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return found
