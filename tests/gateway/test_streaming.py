from __future__ import annotations

import json

from gateway.streaming import UsageStripper, error_event


def chunk(content: str, usage: bool) -> bytes:
    body = {"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]}
    text = json.dumps(body, separators=(",", ":"))
    if usage:
        text = text[:-1] + ',"usage":null}'
    return f"data: {text}\n\n".encode()


USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def relay(stream: bytes, split_every: int) -> tuple[bytes, UsageStripper]:
    stripper = UsageStripper()
    out = b"".join(
        stripper.feed(stream[i : i + split_every]) for i in range(0, len(stream), split_every)
    )
    return out + stripper.flush(), stripper


def test_strips_usage_however_the_bytes_are_split() -> None:
    upstream = chunk("Hel", True) + chunk("lo", True) + USAGE + DONE
    expected = chunk("Hel", False) + chunk("lo", False) + DONE
    for size in (1, 7, 64, len(upstream)):
        out, stripper = relay(upstream, size)
        assert out == expected
        assert stripper.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_leaves_other_events_alone() -> None:
    upstream = b": keep-alive\n\n" + chunk("x", False) + b"event: ping\ndata: {}\n\n" + DONE
    out, stripper = relay(upstream, 5)
    assert out == upstream
    assert stripper.usage is None


def test_spaced_json_is_rewritten_through_a_parse() -> None:
    event = b'data: {"id": "c", "choices": [{"delta": {}}], "usage": null}\n\n'
    out, _ = relay(event, 100)
    assert json.loads(out[6:]) == {"id": "c", "choices": [{"delta": {}}]}


def test_complete_events_are_not_held_back() -> None:
    stripper = UsageStripper()
    assert stripper.feed(chunk("a", True) + b'data: {"id"') == chunk("a", False)
    assert stripper.flush() == b'data: {"id"'


def test_error_event_shape() -> None:
    event = error_event("gone", "upstream_error", "upstream_stream_interrupted")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["error"]["code"] == "upstream_stream_interrupted"
