"""The body sent upstream: the client's bytes, with ``model`` (and perhaps the usage option)
changed and nothing else (``gateway.jsonbytes`` splices the new values in).

Built once per upstream model, and not at all when nothing changes.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.jsonbytes import Span, first_member, splice, top_level_value_spans
from gateway.streaming import UsageStripper
from gateway.wire import Endpoint


class UpstreamPayload:
    __slots__ = (
        "_by_model",
        "_model_spans",
        "_parsed",
        "_raw",
        "_requested",
        "_usage_edits",
        "client_wants_usage",
        "stream",
    )

    def __init__(self, endpoint: Endpoint, parsed: dict[str, Any], raw: bytes, model: str):
        self._parsed = parsed
        self._raw = raw
        self._requested = model
        self._by_model: dict[str, bytes] = {}
        self._model_spans: list[Span] | None = None
        self._usage_edits: list[tuple[Span, bytes]] = []
        self.stream = parsed.get("stream") is True
        self.client_wants_usage = True
        if self.stream and endpoint.stream_usage_option:
            options = parsed.get("stream_options")
            if options is None or (isinstance(options, dict) and not options.get("include_usage")):
                # Ask for the usage so the cost is known; the client gets the stream without it.
                wanted = {**(options or {}), "include_usage": True}
                value = orjson.dumps(wanted)
                if "stream_options" in parsed:
                    spans = top_level_value_spans(raw, "stream_options")
                    self._usage_edits = [(span, value) for span in spans]
                else:
                    self._usage_edits = [first_member(raw, b'"stream_options":' + value)]
                parsed["stream_options"] = wanted
                self.client_wants_usage = False

    @property
    def parsed(self) -> dict[str, Any]:
        return self._parsed

    def stripper(self) -> UsageStripper | None:
        return None if self.client_wants_usage else UsageStripper()

    def for_model(self, upstream_model: str) -> bytes:
        body = self._by_model.get(upstream_model)
        if body is None:
            if upstream_model == self._requested and not self._usage_edits:
                body = self._raw
            else:
                if self._model_spans is None:
                    self._model_spans = top_level_value_spans(self._raw, "model")
                value = orjson.dumps(upstream_model)
                edits = [(span, value) for span in self._model_spans]
                body = splice(self._raw, edits + self._usage_edits)
            self._by_model[upstream_model] = body
        return body
