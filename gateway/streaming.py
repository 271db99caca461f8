"""Server-sent events passing through the gateway.

Streams are relayed chunk by chunk as they arrive. The only rewrite: when the gateway asked the
upstream for ``stream_options.include_usage`` on the client's behalf (so it knows the cost), the
usage chunk and the ``"usage": null`` fields that come with it are removed again. That needs
event framing; complete events are forwarded at once, and only a partial event is held back.
"""

from __future__ import annotations

import orjson

from dialects.errors import anthropic_error_event

_SEPARATOR = b"\n\n"
_MAX_PENDING = 1 << 20  # an upstream that never frames its events is passed on unframed


class UsageStripper:
    def __init__(self) -> None:
        self._pending = b""
        self.usage: dict[str, object] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward now, given the next chunk from the upstream."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(_SEPARATOR)
        if end < 0:
            if len(data) > _MAX_PENDING:
                self._pending = b""
                return data
            self._pending = data
            return b""
        end += len(_SEPARATOR)
        complete, self._pending = data[:end], data[end:]
        if b'"usage"' not in complete:
            return complete
        if b'"usage":{' not in complete:
            # The common case: only the `"usage":null` of ordinary chunks, removed in bulk.
            cleaned = complete.replace(b',"usage":null', b"").replace(b'"usage":null,', b"")
            if b'"usage"' not in cleaned:
                return cleaned
        return b"".join(self._rewrite(event) for event in complete.split(_SEPARATOR)[:-1])

    def flush(self) -> bytes:
        """Whatever was held back, at the end of the stream."""
        rest, self._pending = self._pending, b""
        return rest

    def _rewrite(self, event: bytes) -> bytes:
        if b'"usage"' not in event or not event.startswith(b"data:"):
            return event + _SEPARATOR
        if b'"usage":null' in event and b'"usage":{' not in event:
            cleaned = event.replace(b',"usage":null', b"").replace(b'"usage":null,', b"")
            if b'"usage"' not in cleaned:
                return cleaned + _SEPARATOR
        try:
            payload = orjson.loads(event[5:])
        except orjson.JSONDecodeError:
            return event + _SEPARATOR
        if not isinstance(payload, dict) or "usage" not in payload:
            return event + _SEPARATOR
        usage = payload.pop("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if payload.get("choices") == []:
                return b""  # the usage-only chunk the client did not ask for
        return b"data: " + orjson.dumps(payload) + _SEPARATOR


def error_event(message: str, type_: str, code: str, dialect: str = "openai") -> bytes:
    """An error in the stream shape of the call's dialect; the SDKs raise it instead of
    ending silently. Anthropic's names its type (``api_error``, ``overloaded_error``)."""
    if dialect == "anthropic":
        kind = "overloaded_error" if code == "gateway_shutting_down" else "api_error"
        return anthropic_error_event(kind, message)
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + _SEPARATOR
