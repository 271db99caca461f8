"""The content collector (``capture.retention.collect_content``): parts no kept call refers to are
deleted, and a part a kept call refers to never is."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import random
from typing import Any

import orjson
from sqlalchemy import select

from capture.config import CaptureSettings
from capture.content import row_references
from capture.prepare import Preparer
from capture.retention import collect_content, prune_store
from capture.schema import calls, content
from capture.store import Store
from tests.capture.factories import chat_body, make_record

ON = CaptureSettings(content_store=True)
START = dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)


def prompt(n: int) -> str:
    return f"System prompt of feature {n}: you answer questions about the product. " * 10


def request(system: str, question: str) -> bytes:
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
        }
    )


def call(store: Store, moment: dt.datetime, system: str, answer: str) -> dict[str, Any]:
    record = make_record(
        started_at=moment.timestamp(),
        request_body=request(system, "What now?"),
        response_body=chat_body(answer),
    )
    return Preparer(ON).prepare(record).row


async def referenced_and_stored(store: Store) -> tuple[set[str], set[str]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(calls.c.request, calls.c.response, calls.c.normalized).where(
                calls.c.content_refs.is_(True)
            )
        )
        referenced: set[str] = set()
        for row in rows.mappings():
            referenced |= row_references(dict(row))
        stored = set((await connection.execute(select(content.c.hash))).scalars())
    return referenced, stored


def test_a_pruned_calls_parts_go_and_a_kept_calls_stay(database_url: str) -> None:
    shared, old_only, new_only = prompt(1), prompt(2), prompt(3)
    answer = "A long answer that only the old call gave, stored once as a part. " * 6

    async def scenario() -> tuple[Any, Any, set[str], set[str], Any]:
        store = await Store.connect(database_url)
        try:
            store.clock = lambda: START
            old = call(store, START, shared, answer)
            await store.insert_calls([old, call(store, START, old_only, "short")])
            later = START + dt.timedelta(days=35)
            store.clock = lambda: later
            new = call(store, later, shared, "short")  # the shared part, seen again 35 days on
            await store.insert_calls([new, call(store, later, new_only, "short")])
            pruned = await prune_store(store, dt.timedelta(days=30), now=later)
            referenced, stored = await referenced_and_stored(store)
            return pruned, await store.get_call(new["id"]), referenced, stored, new
        finally:
            await store.close()

    pruned, read, referenced, stored, new = asyncio.run(scenario())
    assert pruned.calls == 2
    assert pruned.content == 2  # the old-only prompt and the old call's answer
    assert referenced <= stored and referenced == stored
    assert read is not None and read["request"]["messages"][0]["content"] == shared
    assert b"$ref" not in orjson.dumps(read["request"]) and new["id"] == read["id"]


def test_nothing_referenced_is_ever_collected(database_url: str) -> None:
    """Months of traffic from two replicas (each with its own memory of what it stored), prompts
    that come and go, prunes at random ages, the collector after each and in between: at every
    point every part a kept call refers to is stored, and parts nobody refers to do go."""
    rng = random.Random(15)
    prompts = [prompt(n) for n in range(8)]

    async def scenario() -> tuple[int, int]:
        stores = [await Store.connect(database_url), await Store.connect(database_url)]
        collected = 0
        checks = 0
        try:
            for day in range(60):
                moment = START + dt.timedelta(days=day, hours=rng.random() * 20)
                live = prompts[day // 15 : day // 15 + 4]  # a feature's prompt lives ~2 months
                for store in stores:
                    store.clock = functools.partial(lambda at: at, moment)
                    rows = [
                        call(store, moment, rng.choice(live), f"Answer {day}-{n}. " * 20)
                        for n in range(3)
                    ]
                    await store.insert_calls(rows)
                if day % 4 == 3:
                    older_than = dt.timedelta(days=rng.uniform(1, 20))
                    pruned = await prune_store(stores[day % 2], older_than, now=moment)
                    collected += pruned.content
                elif day % 4 == 1:
                    collected += await collect_content(stores[0].engine, now=moment)
                referenced, stored = await referenced_and_stored(stores[0])
                assert referenced <= stored, f"day {day}: {len(referenced - stored)} missing"
                checks += 1
            for store in stores:  # every kept call reads back whole
                async with store.engine.connect() as connection:
                    kept = list((await connection.execute(select(calls.c.id))).scalars())
                for id_ in kept[:20]:
                    row = await store.get_call(id_)
                    assert row is not None and b"$ref" not in orjson.dumps(row["request"])
        finally:
            for store in stores:
                await store.close()
        return collected, checks

    collected, checks = asyncio.run(scenario())
    assert checks == 60
    assert collected > 100  # the pruned calls' own answers, and prompts no longer used


def test_a_part_written_today_survives_a_prune_of_everything(database_url: str) -> None:
    """The writer skips a part it stored today; so the collector must keep today's parts even
    when no call is left (a batch may still be on its way)."""

    async def scenario() -> tuple[int, set[str]]:
        store = await Store.connect(database_url)
        try:
            now = START + dt.timedelta(days=3)
            store.clock = lambda: now
            await store.insert_calls([call(store, now, prompt(1), "short")])
            pruned = await prune_store(
                store, dt.timedelta(seconds=1), now=now + dt.timedelta(hours=1)
            )
            again = call(store, now, prompt(1), "short")  # the writer does not write it again
            await store.insert_calls([again])
            referenced, stored = await referenced_and_stored(store)
            assert referenced <= stored
            return pruned.content, stored
        finally:
            await store.close()

    collected, stored = asyncio.run(scenario())
    assert collected == 0 and len(stored) == 1
