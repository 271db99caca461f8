"""Feedback on a captured call: the body of ``POST /v1/feedback`` and how it is stored.

``score`` is a number in [-1, 1]. Both common scales fit as they are: ratings in [0, 1]
(0 = bad, 1 = good, e.g. 0.8) and thumbs down/up as -1/+1. Map other scales (1-5 stars) into
one of these in the app. Several feedback entries per call are allowed; the exporter filters
on them (e.g. ``score >= 0.5``, ``label = 'accepted'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from capture.errors import UnknownCall
from capture.redaction import Redactor
from capture.schema import COMMENT_LENGTH, LABEL_LENGTH
from capture.store import Store

_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
PENDING_WAIT_S = 2.0
"""How long feedback for a call still in the writer's queue waits for it to be stored."""


class FeedbackIn(BaseModel):
    """``{"request_id": "...", "score": 1, "label": "accepted", "comment": "..."}``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str
    """The call's ``x-request-id``: 32 hex digits, or the same UUID with dashes."""
    score: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False)
    label: str | None = Field(default=None, max_length=LABEL_LENGTH)
    comment: str | None = Field(default=None, max_length=COMMENT_LENGTH)

    @field_validator("request_id")
    @classmethod
    def _normalise_id(cls, value: str) -> str:
        normalised = value.strip().replace("-", "").lower()
        if not _REQUEST_ID.fullmatch(normalised):
            raise ValueError("must be the x-request-id of a call: 32 hex digits or a UUID")
        return normalised

    @field_validator("label", "comment")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return value.replace("\x00", "") if value is not None else None


class Writer(Protocol):
    """What feedback needs of the capture writer (``CaptureWriter`` or ``ProcessWriter``)."""

    def default_redactor(self) -> Redactor: ...

    def is_pending(self, request_id: str) -> bool: ...

    async def flush(self) -> None: ...


async def record_feedback(store: Store, body: FeedbackIn, writer: Writer | None = None) -> int:
    """Store ``body`` and return the feedback's id; ``UnknownCall`` (404) for an unknown call.

    ``label`` and ``comment`` are redacted with the capture's redaction list (``capture.redact``).
    Apps often send feedback right after the answer, before the writer has stored the call
    (batches are written every ``flush_interval_ms``): when ``writer`` still holds the call,
    it is flushed first.
    """
    label, comment = body.label, body.comment
    if writer is not None:
        # Free text from the app's users: redacted like every string the capture stores.
        redactor = writer.default_redactor()
        if redactor:
            label = redactor.redact_text(label)[:LABEL_LENGTH] if label is not None else None
            comment = redactor.redact_text(comment)[:COMMENT_LENGTH] if comment else comment
    try:
        return await store.add_feedback(body.request_id, body.score, label, comment)
    except UnknownCall:
        if writer is None or not writer.is_pending(body.request_id):
            raise
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PENDING_WAIT_S):
            await writer.flush()
    return await store.add_feedback(body.request_id, body.score, label, comment)
