from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import ValidationError

from capture.config import CaptureSettings
from capture.errors import UnknownCall
from capture.feedback import FeedbackIn, record_feedback
from capture.store import Store
from capture.writer import CaptureWriter
from tests.capture.factories import make_record

HEX_ID = "0190f0a1b2c37d4e8f60718293a4b5c6"


def test_a_valid_body() -> None:
    body = FeedbackIn.model_validate(
        {"request_id": HEX_ID, "score": 1, "label": "accepted", "comment": "great"}
    )
    assert (body.request_id, body.score, body.label, body.comment) == (
        HEX_ID,
        1.0,
        "accepted",
        "great",
    )


def test_a_uuid_with_dashes_or_capitals_is_normalised() -> None:
    dashed = str(uuid.UUID(HEX_ID)).upper()
    assert FeedbackIn(request_id=dashed, score=0.5).request_id == HEX_ID


@pytest.mark.parametrize("score", [-1, -1.0, 0, 0.75, 1])
def test_ratings_and_thumbs_fit(score: float) -> None:
    assert FeedbackIn(request_id=HEX_ID, score=score).score == score


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "abc", "score": 1},
        {"request_id": HEX_ID, "score": 1.5},
        {"request_id": HEX_ID, "score": -2},
        {"request_id": HEX_ID, "score": "nan"},
        {"request_id": HEX_ID},
        {"request_id": HEX_ID, "score": 1, "label": "x" * 101},
        {"request_id": HEX_ID, "score": 1, "comment": "x" * 4001},
        {"request_id": HEX_ID, "score": 1, "rating": 5},
    ],
)
def test_bad_bodies_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeedbackIn.model_validate(body)


def test_feedback_right_after_the_answer_waits_for_the_queued_call(database_url: str) -> None:
    async def scenario() -> None:
        store = await Store.connect(database_url)
        writer = CaptureWriter(store, CaptureSettings(flush_interval_ms=60_000, batch_size=1000))
        await writer.start()
        try:
            record = make_record()
            assert writer.submit(record)
            assert writer.is_pending(record.id)
            body = FeedbackIn(request_id=record.id, score=1)
            feedback_id = await record_feedback(store, body, writer)
            assert feedback_id > 0
            assert not writer.is_pending(record.id)
            assert [f["score"] for f in await store.feedback_for(record.id)] == [1.0]
            with pytest.raises(UnknownCall):
                await record_feedback(store, FeedbackIn(request_id="a" * 32, score=0), writer)
        finally:
            await writer.drain(5)
            await store.close()

    asyncio.run(scenario())
