"""What the hot path hands to the writer: raw data only, cheap to fill.

Parsing, stream assembly, token counts, cost and redaction all happen later, in the writer's
background task (``capture.prepare``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Endpoint = Literal["chat", "completions", "embeddings", "responses", "messages", "passthrough"]
"""``messages``: Anthropic's Messages API (``/v1/messages``)."""

WireDialect = Literal["openai", "anthropic"]
UpstreamApi = Literal["openai", "anthropic", "azure"]


@dataclass(slots=True, kw_only=True)
class CallRecord:
    id: str
    """32 hex digits (a UUIDv7 from the gateway); the primary key and the ``x-request-id``."""
    started_at: float
    """Epoch seconds when the gateway received the call."""
    endpoint: Endpoint | str
    route: str | None
    variant: str | None
    provider: str | None
    requested_model: str | None
    upstream_model: str | None
    request_body: bytes
    """The client's JSON as received (before ``model`` was rewritten)."""
    status: int
    stream: bool
    total_ms: float
    overhead_ms: float
    response_body: bytes | None = None
    """Non-stream: the body as the upstream returned it."""
    stream_chunks: list[bytes] | None = None
    """Stream: the upstream's raw SSE bytes, in order, split anywhere."""
    error: str | None = None
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    user_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    """From ``x-gateway-tags``; the body's ``metadata`` is merged in when the record is prepared
    (the header wins on a conflict)."""
    shadow_of: str | None = None
    """The id of the call this shadow call copied."""
    cache_hit: bool = False
    """Answered from the gateway's response cache: stored with a cost of 0."""
    redact: tuple[str, ...] | None = None
    """Which redactions apply to this call; None: the settings' list, (): none."""
    dialect: WireDialect | str = "openai"
    """The client's wire dialect: ``request_body`` is in it (an OpenAI request, or an Anthropic
    Messages request for ``endpoint`` "messages")."""
    upstream_api: UpstreamApi | str = "openai"
    """The provider's API: ``response_body`` and ``stream_chunks`` are in its dialect (an
    Anthropic Message, or Anthropic's SSE events, for "anthropic"; OpenAI's format for "openai"
    and "azure")."""
