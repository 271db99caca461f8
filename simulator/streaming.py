"""Writing a server-sent-event stream with real pacing, and cutting it for `drop` faults.

Each event is written to the wire as it is produced, after the time to first token and then
one token delay per paced event, so time to first token and inter-token gaps are measurable.
With a zero token delay the events are written in one go, which is what the wire would show
anyway and saves a write per token under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence

from aiohttp import web

from simulator.exchange import Call

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Event = tuple[bytes, bool]
"""An encoded event and whether it waits one token delay before it is sent."""


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
) -> web.StreamResponse:
    """Send ``events`` then ``trailer`` (e.g. ``data: [DONE]``) as a 200 event stream."""
    if ttft_s > 0:
        await asyncio.sleep(ttft_s)
    response = web.StreamResponse(headers=SSE_HEADERS)
    cut_after = call.cut_after
    pending: list[bytes] = []
    sent = 0
    try:
        await response.prepare(request)
        for event, paced in events:
            if sent == cut_after:
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
        pending.append(trailer)
        await response.write(b"".join(pending))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    return response
