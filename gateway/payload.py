"""The body sent upstream: the client's, with ``model`` (and perhaps the usage option) changed.

Serialized once per upstream model, and not at all when nothing changes.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.streaming import UsageStripper
from gateway.wire import Endpoint


class UpstreamPayload:
    __slots__ = ("_by_model", "_parsed", "_raw", "_requested", "client_wants_usage", "stream")

    def __init__(self, endpoint: Endpoint, parsed: dict[str, Any], raw: bytes, model: str):
        self._parsed = parsed
        self._raw = raw
        self._requested = model
        self._by_model: dict[str, bytes] = {}
        self.stream = parsed.get("stream") is True
        self.client_wants_usage = True
        if self.stream and endpoint.stream_usage_option:
            options = parsed.get("stream_options")
            if options is None or (isinstance(options, dict) and not options.get("include_usage")):
                # Ask for the usage so the cost is known; the client gets the stream without it.
                parsed["stream_options"] = {**(options or {}), "include_usage": True}
                self.client_wants_usage = False

    @property
    def parsed(self) -> dict[str, Any]:
        return self._parsed

    def stripper(self) -> UsageStripper | None:
        return None if self.client_wants_usage else UsageStripper()

    def for_model(self, upstream_model: str) -> bytes:
        body = self._by_model.get(upstream_model)
        if body is None:
            if upstream_model == self._requested and self.client_wants_usage:
                body = self._raw
            else:
                self._parsed["model"] = upstream_model
                body = orjson.dumps(self._parsed)
            self._by_model[upstream_model] = body
        return body
