"""Writing a server-sent-event stream with real pacing, cut for `drop` faults and ended early
with an error event for `error-event` faults.

Each event is written to the wire as it is produced, after the time to first token and then
one token delay per paced event, so time to first token and inter-token gaps are measurable.
With a zero token delay the events are written in one go, which is what the wire would show
anyway and saves a write per token under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import orjson
from aiohttp import web

from simulator.exchange import SERVER_ERROR_MESSAGE, Call

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Event = tuple[bytes, bool]
"""An encoded event and whether it waits one token delay before it is sent."""

ErrorEvent = Callable[[int], bytes]
"""The error event that ends a stream under an `error-event` fault, given the number of events
sent before it."""


def openai_error_event(sent: int) -> bytes:
    """How OpenAI reports an error in a chat or completion stream: a data line with ``error``."""
    error = {"message": SERVER_ERROR_MESSAGE, "type": "server_error", "param": None, "code": None}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def interleave(lanes: Sequence[Sequence[bytes]], lead: int) -> Iterator[Event]:
    """The events of n choices step by step, as OpenAI interleaves them.

    The first ``lead`` events of every lane (the role chunk, the first token) go out with the
    first token; each later step waits one token delay, shared by all choices.
    """
    steps = max((len(lane) for lane in lanes), default=0)
    for step in range(steps):
        paced = step >= lead
        for lane in lanes:
            if step < len(lane):
                yield lane[step], paced
                paced = False


async def stream_events(
    request: web.Request,
    call: Call,
    events: Iterable[Event],
    ttft_s: float,
    token_s: float,
    trailer: bytes = b"",
    error_event: ErrorEvent = openai_error_event,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send ``events`` then ``trailer`` (e.g. ``data: [DONE]``) as a 200 event stream.

    Under `drop` the connection is closed after ``call.cut_after`` events (before the trailer
    when the stream is shorter); under `error-event` ``error_event(sent)`` replaces the rest
    after ``call.error_after`` events, and the stream ends there, cleanly.
    """
    if ttft_s > 0:
        await asyncio.sleep(ttft_s)
    response = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    cut_after = call.cut_after
    error_after = call.error_after
    pending: list[bytes] = []
    sent = 0
    try:
        await response.prepare(request)
        for event, paced in events:
            if sent in (cut_after, error_after):
                break
            if token_s > 0:
                if paced:
                    await asyncio.sleep(token_s)
                await response.write(event)
            else:
                pending.append(event)
            sent += 1
        if cut_after is not None:
            if pending:
                await response.write(b"".join(pending))
            transport = request.transport
            if transport is not None:
                transport.close()
            return response
        pending.append(trailer if error_after is None else error_event(sent))
        await response.write(b"".join(pending))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    return response
