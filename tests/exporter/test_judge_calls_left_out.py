"""The exporter never selects a judge's calls (``gateway.purpose=judge``), on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from capture.ledger import COUNTERFACTUAL, JUDGE, PURPOSE_TAG, ROLLOUT_TAG
from capture.migrate import upgrade
from capture.store import Store
from exporter.database import open_store
from exporter.filters import Filters
from exporter.selection import count, stream_pages
from tests.capture_support import BACKENDS, Backend, open_backend
from tests.exporter.factory import chat_call


@pytest.fixture(params=BACKENDS, scope="module")
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path_factory.mktemp("judge-calls"), __name__) as b:
        yield b


@pytest.fixture
def url(backend: Backend) -> str:
    url = backend.new_url()
    upgrade(url)
    rows = [
        chat_call("a user's question", "a", minutes=1),
        chat_call("which answer is better?", '{"winner": "A", "reason": "r"}', route="judge",
                  tags={PURPOSE_TAG: JUDGE, ROLLOUT_TAG: "support"}, minutes=2),
        chat_call("judged on the route itself", "b", tags={PURPOSE_TAG: JUDGE}, minutes=3),
        chat_call("a counterfactual teacher call", "c",
                  tags={PURPOSE_TAG: COUNTERFACTUAL, ROLLOUT_TAG: "support"}, minutes=4),
        chat_call("tagged by the app", "d", tags={"task": "billing"}, minutes=5),
    ]  # fmt: skip

    async def fill() -> None:
        store = await Store.connect(url)
        try:
            await store.insert_calls(rows)
        finally:
            await store.close()

    asyncio.run(fill())
    return url


def selected(url: str, filters: Filters) -> tuple[list[str], int]:
    async def go() -> tuple[list[str], int]:
        prompts: list[str] = []
        async with open_store(url) as store:
            async for page in stream_pages(store.engine, filters, 2):
                prompts += [row["request"]["messages"][-1]["content"] for row in page]
            return prompts, await count(store.engine, filters)

    return asyncio.run(go())


def test_judge_calls_are_never_selected(url: str) -> None:
    kept = ["a user's question", "a counterfactual teacher call", "tagged by the app"]
    assert selected(url, Filters()) == (kept, 3)
    assert selected(url, Filters(shadow="include", finish_reasons=())) == (kept, 3)
    assert selected(url, Filters(route="judge")) == ([], 0)
    assert selected(url, Filters(tags={PURPOSE_TAG: JUDGE})) == ([], 0)
