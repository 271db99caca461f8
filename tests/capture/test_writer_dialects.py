"""The writer with a normaliser, through a real SQLite and PostgreSQL store: calls in each
dialect are stored with their dialects, cache tokens, cost and normalised view, and a failing
normaliser costs only the view."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from capture.config import CaptureSettings
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.chat_view import chat_views, simple_chat_view
from tests.capture.factories import (
    TOOL_ANSWER,
    anthropic_request,
    anthropic_stream,
    chat_request,
    make_anthropic_record,
    make_record,
    make_stream_record,
    split_every,
)


def fast() -> CaptureSettings:
    return CaptureSettings(batch_size=50, flush_interval_ms=20)


def write(url: str, records: list[Any], normalize: Any) -> tuple[list[Any], dict[str, Any]]:
    """Write ``records`` through a writer with ``normalize``; the stored rows, and its stats."""

    async def main() -> tuple[list[Any], dict[str, Any]]:
        store = await Store.connect(url)
        try:
            writer = CaptureWriter(store, fast(), normalize=normalize)
            await writer.start()
            assert all(writer.submit(record) for record in records)
            assert await writer.drain(10)
            return [await store.get_call(r.id) for r in records], writer.stats()
        finally:
            await store.close()

    return asyncio.run(main())


def records() -> list[Any]:
    tool_request = chat_request("Weather in Paris?", stream=True)
    return [
        make_anthropic_record(),  # Anthropic in, Claude out
        make_record(  # OpenAI in, Claude out, streamed
            request_body=tool_request,
            response_body=None,
            stream_chunks=split_every(anthropic_stream(TOOL_ANSWER), 17),
            stream=True,
            upstream_api="anthropic",
            upstream_model="claude-sonnet-4-5",
        ),
        make_stream_record(  # Anthropic in, an OpenAI-format student out (Azure), streamed
            ["Hi"],
            endpoint="messages",
            dialect="anthropic",
            upstream_api="azure",
            request_body=anthropic_request(stream=True),
        ),
        make_stream_record(["plain", " openai"]),  # OpenAI all along
    ]


@pytest.mark.parametrize("view", list(chat_views()))
def test_each_dialect_is_stored_with_its_view(database_url: str, view: str) -> None:
    normalize = chat_views()[view]
    stored, stats = write(database_url, records(), normalize)
    claude, chat_to_claude, anthropic_to_azure, plain = stored
    assert stats["written"] == 4 and stats["normalize_failed"] == 0

    assert (claude["endpoint"], claude["dialect"], claude["upstream_api"]) == (
        "messages",
        "anthropic",
        "anthropic",
    )
    assert claude["normalized"]["request"]["messages"][-1]["content"] == "Say hello"
    assert claude["normalized"]["response"]["choices"][0]["message"]["content"] == "Hello there"

    assert chat_to_claude["response"] == TOOL_ANSWER
    assert chat_to_claude["normalized"]["request"] is None  # the stored request is the chat one
    assert (chat_to_claude["cached_tokens"], chat_to_claude["cache_write_tokens"]) == (3000, 1000)
    assert chat_to_claude["finish_reason"] == "tool_calls"
    expected = (12 * 3.00 + 1000 * 3.75 + 3000 * 0.30 + 48 * 15.00) / 1e6
    assert chat_to_claude["cost_usd"] == pytest.approx(expected)
    message = chat_to_claude["normalized"]["response"]["choices"][0]["message"]
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris",
        "unit": "celsius",
        "days": [1, 2],
    }

    assert anthropic_to_azure["upstream_api"] == "azure"
    assert anthropic_to_azure["response"]["object"] == "chat.completion"
    assert anthropic_to_azure["normalized"]["request"]["messages"][-1]["content"] == "Say hello"

    assert (plain["dialect"], plain["upstream_api"], plain["normalized"]) == (
        "openai",
        "openai",
        None,
    )
    assert plain["cache_write_tokens"] == 0


def test_a_failing_normaliser_costs_only_the_view(database_url: str) -> None:
    def broken(request: Any, *_: Any) -> dict[str, Any] | None:
        if request["messages"][0]["content"] == "boom":
            raise ValueError("cannot translate")
        return simple_chat_view(request, *_)

    given = [make_anthropic_record(request_body=anthropic_request("boom")), make_anthropic_record()]
    stored, stats = write(database_url, given, broken)
    assert stats["written"] == 2 and stats["normalize_failed"] == 1 and stats["failed"] == 0
    failed, fine = stored
    assert failed["normalized"] is None and failed["error"] is None
    assert failed["request"]["messages"][0]["content"] == "boom"
    assert failed["prompt_tokens"] == 25 and failed["cost_usd"] is not None
    assert fine["normalized"]["request"]["messages"][-1]["content"] == "Say hello"
