from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from capture import store as store_module
from capture.config import CaptureSettings
from capture.errors import UnknownCall
from capture.prepare import Preparer
from capture.store import Store
from tests.capture.factories import chat_body, make_record, make_stream_record

PREPARER = Preparer(CaptureSettings(content_store=False))  # rows as stored whole


def with_store(url: str, scenario: Callable[[Store], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        store = await Store.connect(url)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(run())


def row(**fields: Any) -> dict[str, Any]:
    return PREPARER.prepare(make_record(**fields)).row


def test_round_trip(database_url: str) -> None:
    stored = row(tags={"team": "search"}, shadow_of="0" * 32)
    streamed = PREPARER.prepare(make_stream_record(["a", "b"])).row

    async def scenario(store: Store) -> None:
        await store.insert_calls([stored, streamed])
        got = await store.get_call(stored["id"])
        assert got is not None
        assert got == stored
        assert got["created_at"].tzinfo == dt.UTC
        assert got["request"]["messages"][0]["content"] == "Say hello"
        assert got["tags"] == {"team": "search"}
        assert got["shadow_of"] == "0" * 32
        got_stream = await store.get_call(streamed["id"])
        assert got_stream is not None and got_stream["stream"] is True
        assert got_stream["response"]["choices"][0]["message"]["content"] == "ab"
        assert await store.get_call("f" * 32) is None
        assert await store.count_calls() == 2

    with_store(database_url, scenario)


def test_a_batch_written_twice_is_stored_once(database_url: str) -> None:
    rows = [row() for _ in range(3)]

    async def scenario(store: Store) -> None:
        await store.insert_calls(rows)
        await store.insert_calls(rows)  # a retry after a lost acknowledgement
        await store.insert_calls([])
        assert await store.count_calls() == 3

    with_store(database_url, scenario)


def test_feedback_round_trip_and_unknown_id(database_url: str) -> None:
    call = row()

    async def scenario(store: Store) -> None:
        await store.insert_calls([call])
        first = await store.add_feedback(call["id"], 1.0, "thumbs_up")
        second = await store.add_feedback(call["id"], -0.5, None, "the answer was too long")
        assert second > first
        feedback = await store.feedback_for(call["id"])
        assert [(f["score"], f["label"], f["comment"]) for f in feedback] == [
            (1.0, "thumbs_up", None),
            (-0.5, None, "the answer was too long"),
        ]
        assert all(f["created_at"].tzinfo == dt.UTC for f in feedback)
        with pytest.raises(UnknownCall, match="no captured call"):
            await store.add_feedback("e" * 32, 1.0)
        assert await store.feedback_for("e" * 32) == []

    with_store(database_url, scenario)


def test_prune_deletes_old_calls_and_their_feedback(database_url: str) -> None:
    now = dt.datetime.now(dt.UTC)
    old = row(started_at=(now - dt.timedelta(days=31)).timestamp())
    recent = row(started_at=(now - dt.timedelta(days=29)).timestamp())

    async def scenario(store: Store) -> None:
        await store.insert_calls([old, recent])
        await store.add_feedback(old["id"], 1.0)
        await store.add_feedback(recent["id"], 0.0)
        assert await store.prune(dt.timedelta(days=30)) == 1
        assert await store.get_call(old["id"]) is None
        assert await store.feedback_for(old["id"]) == []
        assert await store.get_call(recent["id"]) is not None
        assert len(await store.feedback_for(recent["id"])) == 1
        assert await store.prune(dt.timedelta(days=30)) == 0

    with_store(database_url, scenario)


def test_unknown_cost_is_stored_as_null(database_url: str) -> None:
    unpriced = row(
        upstream_model="my-local-llama",
        requested_model="my-local-llama",
        response_body=chat_body(model="my-local-llama"),
    )
    assert unpriced["cost_usd"] is None and unpriced["prompt_tokens"] == 1000

    async def scenario(store: Store) -> None:
        await store.insert_calls([unpriced])
        got = await store.get_call(unpriced["id"])
        assert got is not None and got["cost_usd"] is None and got["prompt_tokens"] == 1000

    with_store(database_url, scenario)


def test_rows_become_parameters_in_slices_between_which_the_loop_runs(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's rows are turned into the driver's parameters a slice at a time (here a row a
    slice), and the event loop runs between slices; the rows are stored as they came."""
    monkeypatch.setattr(store_module, "ENCODE_SLICE_S", 0.0)
    rows = [row(tags={"n": str(i)}) for i in range(40)]

    async def scenario(store: Store) -> None:
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = turns
        params = await store._plans().calls.encode(rows)  # no I/O: only its own yields
        assert turns - before >= len(rows) - 1
        ticking.cancel()
        assert len(params) == len(rows)
        await store.insert_calls(rows)
        for stored in rows:
            assert await store.get_call(stored["id"]) == stored

    with_store(database_url, scenario)


def test_a_batch_of_many_chunks_keeps_every_row_once_each(database_url: str) -> None:
    """More rows than a chunk (on PostgreSQL each chunk is one INSERT of many rows), a last
    chunk shorter than the others, and an id twice in one chunk."""
    rows = [row(tags={"n": str(n)}) for n in range(store_module.INSERT_CHUNK_ROWS * 2 + 5)]
    twice = [*rows[:10], rows[3], *rows[10:]]

    async def scenario(store: Store) -> None:
        await store.insert_calls(twice)
        assert await store.count_calls() == len(rows)
        for stored in (rows[0], rows[3], rows[store_module.INSERT_CHUNK_ROWS], rows[-1]):
            assert await store.get_call(stored["id"]) == stored
        await store.insert_calls(rows[-7:])  # a retry of the tail: nothing twice
        assert await store.count_calls() == len(rows)

    with_store(database_url, scenario)


def test_the_statement_for_many_rows_numbers_each_row_s_parameters_on() -> None:
    plan = store_module._Plan(
        "INSERT INTO t (a, b) VALUES ($1::NUMERIC(12, 6), $2::VARCHAR) ON CONFLICT DO NOTHING",
        (("a", None), ("b", None)),
    )
    assert plan.rows(3) == (
        "INSERT INTO t (a, b) VALUES ($1::NUMERIC(12, 6), $2::VARCHAR), "
        "($3::NUMERIC(12, 6), $4::VARCHAR), ($5::NUMERIC(12, 6), $6::VARCHAR) "
        "ON CONFLICT DO NOTHING"
    )
    assert plan.rows(3) is plan.rows(3)  # made once
    with pytest.raises(TypeError):
        store_module._Plan("INSERT INTO t (a) VALUES ($2)", (("a", None),)).rows(2)
