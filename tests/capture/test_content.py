"""Large repeated request parts stored once (``capture.content``, ``capture.content_store``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import event, func, select, text

from capture.config import CaptureSettings
from capture.content import CONTENT_KEY, FLAG, MIN_PART_BYTES, externalize, substitute
from capture.migrate import current, downgrade, head, upgrade
from capture.prepare import Preparer
from capture.record import CallRecord
from capture.schema import calls, content
from capture.store import Store
from capture.writer import CaptureWriter
from exporter.filters import Filters
from exporter.selection import fetch_by_ids, stream_pages
from tests.capture.chat_view import simple_chat_view
from tests.capture.factories import (
    anthropic_message,
    anthropic_request,
    anthropic_stream,
    chat_body,
    chat_request,
    make_anthropic_record,
    make_record,
    make_stream_record,
)

ON = CaptureSettings(content_store=True)
OFF = CaptureSettings(content_store=False)
SYSTEM = "You review code for a large company. " * 40  # ~1.5 KB, as on every call of a feature
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{n}",
            "description": "Looks things up in the knowledge base. " * 8,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for n in range(3)
]
EARLIER = "An earlier turn of this conversation, long enough to be stored once. " * 6
ANSWER = "A long answer, which the next turn of the conversation sends back. " * 6
SECRET_TURN = "Write to me at someone@example.com, my key is sk-proj-abcdefghijklmnop0123. " * 5


def with_store(url: str, scenario: Callable[[Store], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        store = await Store.connect(url)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(run())


def big_chat(**fields: Any) -> CallRecord:
    body = chat_request(
        "And now?",
        tools=TOOLS,
        temperature=0.2,
    )
    request = orjson.loads(body)
    request["messages"] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EARLIER},
        {"role": "assistant", "content": EARLIER[::-1]},
        *request["messages"],
    ]
    return make_record(request_body=orjson.dumps(request), **fields)


def conversation(*turns: str) -> bytes:
    """A chat request with the big system prompt and these earlier turns (user, assistant, ...)."""
    messages = [{"role": "system", "content": SYSTEM}]
    for index, turn in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": turn})
    messages.append({"role": "user", "content": "And now?"})
    return orjson.dumps({"model": "gpt-4o-mini", "messages": messages, "tools": TOOLS})


def shapes() -> list[CallRecord]:
    """One record of every shape the capture stores."""
    message = anthropic_message()
    anthropic_tools = [
        {"name": "look", "description": "Looks. " * 60, "input_schema": {"type": "object"}}
    ]
    big_anthropic = anthropic_request("Review this.", system=SYSTEM, tools=anthropic_tools)
    streamed_anthropic = anthropic_request(
        "Review this.", stream=True, system=SYSTEM, tools=anthropic_tools
    )
    return [
        make_record(),  # small: everything inline
        make_record(response_body=chat_body(ANSWER)),  # a long answer
        make_anthropic_record(response_body=orjson.dumps(anthropic_message(ANSWER))),
        make_stream_record(list(ANSWER)),
        make_anthropic_record(  # Claude streaming a long answer, with thinking
            response_body=None,
            stream_chunks=[anthropic_stream(anthropic_message(ANSWER))],
            stream=True,
        ),
        make_record(request_body=conversation(SECRET_TURN)),  # redacted parts
        make_record(request_body=conversation(SECRET_TURN), redact=()),  # the same, not redacted
        make_record(request_body=conversation(SECRET_TURN), redact=("email",)),
        big_chat(variant="big"),
        big_chat(variant="again"),  # the same parts again
        make_stream_record(["a", "b"], request_body=big_chat().request_body),
        make_anthropic_record(request_body=big_anthropic),
        make_anthropic_record(
            request_body=streamed_anthropic,
            response_body=None,
            stream_chunks=[anthropic_stream(message)],
            stream=True,
        ),
        make_record(  # an OpenAI request answered by Claude: normalized.request is None
            request_body=big_chat().request_body,
            upstream_api="anthropic",
            response_body=orjson.dumps(message),
        ),
        make_record(request_body=b"not json at all " * 40),
        make_record(
            endpoint="responses",
            request_body=orjson.dumps(
                {
                    "model": "gpt-4o",
                    "instructions": SYSTEM,
                    "input": [
                        {"role": "user", "content": EARLIER},
                        {"role": "user", "content": "hi"},
                    ],
                }
            ),
        ),
        make_record(  # a client's own one-key {"$ref": ...} at a cut place: kept as sent
            request_body=orjson.dumps(
                {"model": "m", "messages": [{"$ref": "mine"}, {"role": "user", "content": "x"}]}
            )
        ),
        make_record(endpoint="embeddings", request_body=orjson.dumps({"input": [EARLIER] * 3})),
        make_stream_record(["x"]),
        make_record(status=500, response_body=None, error="upstream failed"),
    ]


def prepared(records: list[CallRecord], settings: CaptureSettings) -> list[dict[str, Any]]:
    preparer = Preparer(settings, simple_chat_view)
    return [preparer.prepare(record).row for record in records]


def _dump(row: dict[str, Any] | None) -> bytes:
    return orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


# --- the cut itself ------------------------------------------------------------------------------


def test_parts_below_the_threshold_stay_inline_and_the_body_is_not_copied() -> None:
    body = orjson.loads(chat_request())
    parts: dict[str, Any] = {}
    assert externalize(body, parts) is body
    assert parts == {}


def test_large_parts_are_cut_in_place_keeping_the_order_of_keys() -> None:
    body = orjson.loads(big_chat().request_body)
    before = orjson.dumps(body)
    parts: dict[str, Any] = {}
    cut = externalize(body, parts)
    assert orjson.dumps(body) == before  # not changed in place
    assert list(cut) == list(body)
    assert set(cut["tools"]) == {"$ref"}
    assert cut["messages"][0]["role"] == "system" and set(cut["messages"][0]["content"]) == {"$ref"}
    assert cut["messages"][-1] == {"role": "user", "content": "And now?"}  # small: inline
    assert len(parts) == 4  # tools, system, the two earlier turns
    assert all(len(orjson.dumps(part)) >= MIN_PART_BYTES for part in parts.values())
    assert orjson.dumps(substitute(cut, parts)) == before


def test_a_one_key_ref_object_is_always_stored_as_a_part() -> None:
    body = {"messages": [{"$ref": "abc"}]}
    parts: dict[str, Any] = {}
    cut = externalize(body, parts)
    assert list(parts.values()) == [{"$ref": "abc"}]
    assert cut["messages"][0] != {"$ref": "abc"}
    assert substitute(cut, parts) == body


# --- through the store, both backends ------------------------------------------------------------


def test_every_shape_reads_back_byte_for_byte_as_with_the_setting_off(database_url: str) -> None:
    records = shapes()
    off = prepared(records, OFF)
    on = prepared(records, ON)
    assert any(FLAG in row and row[FLAG] for row in on)

    async def scenario(store: Store) -> tuple[list[Any], list[Any], list[Any], int]:
        await store.insert_calls(off)
        before = [await store.get_call(row["id"]) for row in off]
        async with store.engine.begin() as connection:
            await connection.execute(calls.delete())
        await store.insert_calls(on)
        after = [await store.get_call(row["id"]) for row in on]
        async with store.engine.connect() as connection:
            raw = list((await connection.execute(select(calls.c.id, calls.c.request))).all())
            parts = await connection.scalar(select(func.count()).select_from(content))
        return before, after, raw, int(parts or 0)

    before, after, raw, parts = with_store(database_url, scenario)
    for expected, row in zip(before, after, strict=True):
        assert row is not None and expected is not None and FLAG not in row
        assert list(row) == list(expected)
        assert _dump(row) == _dump(expected)
        # the JSON as a reader serialises it, key order included
        assert orjson.dumps(row["request"]) == orjson.dumps(expected["request"])
        assert orjson.dumps(row["normalized"]) == orjson.dumps(expected["normalized"])
        assert orjson.dumps(row["response"]) == orjson.dumps(expected["response"])
    assert before[0] is not None and before[0]["request"] == off[0]["request"]
    stored = dict(raw)
    big = records.index(next(r for r in records if r.variant == "big"))
    assert "$ref" in orjson.dumps(stored[on[big]["id"]]).decode()  # what is stored is the cut
    assert "$ref" not in orjson.dumps(stored[on[0]["id"]]).decode()  # the small one: inline
    assert parts > 0


def test_parts_are_shared_across_calls_and_written_once(database_url: str) -> None:
    first, second = prepared([big_chat(), big_chat(variant="b")], ON)
    assert first[CONTENT_KEY].keys() == second[CONTENT_KEY].keys()
    inserts: list[str] = []

    async def scenario(store: Store) -> tuple[int, dict[str, Any], dict[str, Any]]:
        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "INSERT INTO content" in statement:
                inserts.append(statement)

        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        await store.insert_calls([first])
        await store.insert_calls([second])  # its parts are known: no INSERT INTO content
        async with store.engine.connect() as connection:
            parts = await connection.scalar(select(func.count()).select_from(content))
            requests = dict((await connection.execute(select(calls.c.id, calls.c.request))).all())
        return int(parts or 0), requests[first["id"]], requests[second["id"]]

    parts, one, two = with_store(database_url, scenario)
    assert parts == len(first[CONTENT_KEY]) == 4
    assert len(inserts) == 1
    assert one["messages"][:3] == two["messages"][:3] and one["tools"] == two["tools"]


def test_an_answer_and_the_turn_that_sends_it_back_share_a_part(database_url: str) -> None:
    first = make_record(request_body=conversation(EARLIER), response_body=chat_body(ANSWER))
    second = make_record(request_body=conversation(EARLIER, ANSWER, EARLIER[::-1]))
    claude = make_anthropic_record(response_body=orjson.dumps(anthropic_message(ANSWER)))
    rows = prepared([first, second, claude], ON)
    answer_refs = [
        rows[0]["response"]["choices"][0]["message"]["content"],
        rows[1]["request"]["messages"][2]["content"],
        rows[2]["response"]["content"][0]["text"],
        rows[2]["normalized"]["response"]["choices"][0]["message"]["content"],
    ]
    assert all(set(ref) == {"$ref"} for ref in answer_refs)
    assert len({ref["$ref"] for ref in answer_refs}) == 1

    async def scenario(store: Store) -> tuple[int, list[Any]]:
        await store.insert_calls(rows)
        async with store.engine.connect() as connection:
            parts = await connection.scalar(select(func.count()).select_from(content))
        return int(parts or 0), [await store.get_call(row["id"]) for row in rows]

    parts, got = with_store(database_url, scenario)
    # system prompt, tools, EARLIER, ANSWER, EARLIER reversed; Claude's system prompt is small
    assert parts == 5
    assert got[0]["response"]["choices"][0]["message"]["content"] == ANSWER
    assert got[1]["request"]["messages"][2] == {"role": "assistant", "content": ANSWER}
    assert got[2]["normalized"]["response"]["choices"][0]["message"]["content"] == ANSWER


def test_a_second_store_writes_parts_already_there_without_conflict(database_url: str) -> None:
    first, second = prepared([big_chat(), big_chat()], ON)
    with_store(database_url, lambda store: store.insert_calls([first]))
    with_store(database_url, lambda store: store.insert_calls([second]))  # new store, no memory

    async def scenario(store: Store) -> Any:
        return await store.get_call(second["id"])

    got = with_store(database_url, scenario)
    assert got is not None and got["request"] == prepared([big_chat()], OFF)[0]["request"]


def test_rows_written_before_or_with_the_setting_off_read_as_stored(database_url: str) -> None:
    old = prepared(
        [make_record(request_body=orjson.dumps({"messages": [{"$ref": "x" * 64}]}))], OFF
    )
    new = prepared([big_chat()], ON)

    async def scenario(store: Store) -> Any:
        await store.insert_calls(old)  # no content_refs key: NULL
        await store.insert_calls(new)
        return await store.get_call(old[0]["id"])

    got = with_store(database_url, scenario)
    assert got == old[0]  # the literal {"$ref": ...} of an old row is not looked up


def test_a_batch_with_rows_of_both_kinds(database_url: str) -> None:
    records = [make_record(), big_chat(), make_record()]
    on = prepared(records, ON)
    on[0].pop(FLAG)  # as a fallback row (no content_refs key) mixed in a batch
    off = prepared(records, OFF)
    got = with_store(
        database_url,
        lambda store: _insert_and_get(store, on),
    )
    assert [_dump(row) for row in got] == [_dump(row) for row in off]


async def _insert_and_get(store: Store, rows: list[dict[str, Any]]) -> list[Any]:
    await store.insert_calls(rows)
    return [await store.get_call(row["id"]) for row in rows]


# --- the exporter's reads ------------------------------------------------------------------------


def _write(url: str, rows: list[dict[str, Any]]) -> None:
    with_store(url, lambda store: store.insert_calls(rows))


def _export(url: str, page_size: int, queries: list[str]) -> tuple[list[Any], dict[str, Any]]:
    async def scenario(store: Store) -> tuple[list[Any], dict[str, Any]]:
        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "FROM content" in statement:
                queries.append(statement)

        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        rows = [
            row async for page in stream_pages(store.engine, Filters(), page_size) for row in page
        ]
        by_id = await fetch_by_ids(store.engine, [row["id"] for row in rows])
        return rows, by_id

    result: tuple[list[Any], dict[str, Any]] = with_store(url, scenario)
    return result


def test_the_exporters_rows_are_the_same_with_the_setting_on_and_off(database_url: str) -> None:
    start = dt.datetime.now(dt.UTC).timestamp() - 3600
    records = [
        big_chat(started_at=start + n) if n % 3 else make_anthropic_record(started_at=start + n)
        for n in range(30)
    ]

    async def wipe(store: Store) -> None:
        async with store.engine.begin() as connection:
            await connection.execute(calls.delete())

    _write(database_url, prepared(records, OFF))
    rows_off, by_id_off = _export(database_url, 7, [])
    with_store(database_url, wipe)
    _write(database_url, prepared(records, ON))
    queries: list[str] = []
    rows_on, by_id_on = _export(database_url, 7, queries)
    assert len(rows_on) == 30
    assert [list(row) for row in rows_on] == [list(row) for row in rows_off]
    assert [_dump(row) for row in rows_on] == [_dump(row) for row in rows_off]
    assert [orjson.dumps(row["request"]) for row in rows_on] == [
        orjson.dumps(row["request"]) for row in rows_off
    ]
    assert {k: _dump(v) for k, v in by_id_on.items()} == {k: _dump(v) for k, v in by_id_off.items()}
    # one query for the parts per page (5 pages of 7) and one per fetch_by_ids chunk: never per row
    assert len(queries) == 5 + 1


# --- the writer, end to end ----------------------------------------------------------------------


def test_the_writer_stores_parts_once_and_reads_give_the_record(database_url: str) -> None:
    records = [big_chat() for _ in range(20)] + [make_anthropic_record() for _ in range(5)]
    expected = {row["id"]: row for row in prepared(records, OFF)}

    async def scenario(store: Store) -> tuple[list[Any], int]:
        writer = CaptureWriter(
            store, ON.model_copy(update={"batch_size": 8}), normalize=simple_chat_view
        )
        await writer.start()
        for record in records:
            assert writer.submit(record)
        assert await writer.drain(10.0)
        got = [await store.get_call(record.id) for record in records]
        async with store.engine.connect() as connection:
            parts = await connection.scalar(select(func.count()).select_from(content))
        return got, int(parts or 0)

    got, parts = with_store(database_url, scenario)
    assert [_dump(row) for row in got] == [_dump(expected[record.id]) for record in records]
    assert parts == 4  # big_chat's four parts; the small Anthropic calls have none


def test_a_record_the_database_rejects_costs_only_itself(database_url: str) -> None:
    from tests.capture.test_writer_isolation import deep_body

    bad = make_record(request_body=deep_body())
    good = [big_chat() for _ in range(10)] + [make_anthropic_record() for _ in range(10)]
    records = [*good[:10], bad, *good[10:]]
    expected = {row["id"]: row for row in prepared(good, OFF)}

    async def scenario(store: Store) -> tuple[CaptureWriter, list[Any], Any]:
        settings = ON.model_copy(update={"batch_size": 100, "flush_interval_ms": 50})
        writer = CaptureWriter(store, settings, normalize=simple_chat_view)
        for record in records:
            assert writer.submit(record)
        await writer.start()
        await asyncio.wait_for(writer.drain(30), 60)
        return (
            writer,
            [await store.get_call(record.id) for record in good],
            await store.get_call(bad.id),
        )

    writer, got, rejected = with_store(database_url, scenario)
    assert (writer.written, writer.failed) == (20, 1) and rejected is None
    assert [_dump(row) for row in got] == [_dump(expected[record.id]) for record in good]


# --- the migration -------------------------------------------------------------------------------


def test_0006_downgrade_puts_every_part_back(database_url: str) -> None:
    records = shapes()
    _write(database_url, prepared(records, ON))
    downgrade(database_url, "0005")
    assert current(database_url) == "0005"
    off = {row["id"]: row for row in prepared(records, OFF)}

    async def scenario(store: Store) -> dict[str, Any]:
        async with store.engine.connect() as connection:
            result = await connection.execute(text("SELECT id, request, normalized FROM calls"))
            rows = result.all()

        def decode(value: Any) -> Any:
            # asyncpg decodes JSONB itself; SQLite gives the JSON text
            return orjson.loads(value) if isinstance(value, str) else value

        return {row[0]: (decode(row[1]), decode(row[2])) for row in rows}

    stored = with_store(database_url, scenario)
    for id_, (request, normalized) in stored.items():
        assert request == off[id_]["request"]
        assert normalized == off[id_]["normalized"]
    upgrade(database_url)
    assert current(database_url) == head()
