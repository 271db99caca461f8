"""The request sent upstream, and the answer's way back when dialects differ.

To a provider that speaks the client's dialect: the client's bytes, with ``model`` (and perhaps
the usage option) changed and nothing else (``gateway.jsonbytes`` splices the new values in);
built once per upstream model, and not at all when nothing changes. To a provider that speaks
the other (an OpenAI chat call to Anthropic's Messages API, an Anthropic call to an
OpenAI-format model), the request is translated by ``dialects`` (once per upstream model), and
so are the answer, its stream and its errors. What cannot be translated is a 400 naming the
field; only chat completions and messages translate into each other.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from dialects.errors import Untranslatable, anthropic_error_to_openai, openai_error_to_anthropic
from dialects.requests import anthropic_to_openai_chat, openai_chat_to_anthropic
from dialects.responses import anthropic_message_to_openai_chat, openai_chat_to_anthropic_message
from dialects.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from gateway.errors import InvalidRequest
from gateway.jsonbytes import Span, first_member, splice, top_level_value_spans
from gateway.relay import ChunkFilter
from gateway.streaming import UsageStripper
from gateway.wire import Endpoint
from router.table import Decision
from router.upstream import Upstream

log = logging.getLogger("gateway.proxy")

_PATHS = {"openai": "/chat/completions", "anthropic": "/messages"}
"""Where a translated call goes, by the upstream's dialect (relative to its base URL)."""


class UpstreamPayload:
    __slots__ = (
        "_by_model",
        "_endpoint",
        "_model_spans",
        "_parsed",
        "_path",
        "_raw",
        "_requested",
        "_translated",
        "_usage_edits",
        "client_wants_usage",
        "stream",
    )

    def __init__(
        self, endpoint: Endpoint, parsed: dict[str, Any], raw: bytes, model: str, path: str = ""
    ):
        self._endpoint = endpoint
        self._path = path
        """The API path relative to ``/v1`` (``/chat/completions``)."""
        self._translated: dict[tuple[str, str, int], bytes] = {}
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

    # --- the way to an upstream of either dialect --------------------------------------------

    def request_for(self, upstream: Upstream, decision: Decision) -> tuple[str, str, bytes]:
        """The (path, query, body) to send to ``upstream`` for ``decision``."""
        if upstream.family == self._endpoint.dialect:
            path, query = upstream.target(self._path, decision.upstream_model)
            return path, query, self.for_model(decision.upstream_model)
        model = decision.upstream_model
        max_tokens = decision.max_tokens or upstream.max_tokens
        key = (upstream.family, model, max_tokens)
        body = self._translated.get(key)
        if body is None:
            translated = self._translate(upstream, model, max_tokens)
            try:
                body = self._translated[key] = orjson.dumps(translated)
            except orjson.JSONEncodeError:
                # Tool call arguments are JSON in a string, which the body's nesting limit does
                # not see; sent to Anthropic they become objects, too deep to write.
                raise InvalidRequest(
                    f"The request nests arrays and objects too deeply to be sent to "
                    f"`{upstream.name}`, which speaks {_API_NAMES[upstream.family]} (tool call "
                    "arguments count: they are sent as objects).",
                    code="nesting_too_deep",
                ) from None
        path, query = upstream.target(_PATHS[upstream.family], model)
        return path, query, body

    def _translate(self, upstream: Upstream, model: str, max_tokens: int) -> dict[str, Any]:
        kind = self._endpoint.kind
        try:
            if kind == "chat" and upstream.family == "anthropic":
                return openai_chat_to_anthropic(
                    self._parsed, model=model, default_max_tokens=max_tokens
                )
            if kind == "messages" and upstream.family == "openai":
                return anthropic_to_openai_chat(self._parsed, model=model)
        except Untranslatable as exc:
            raise InvalidRequest(
                f"{exc.message} (the variant is served by `{upstream.name}`, which speaks "
                f"{_API_NAMES[upstream.family]}).",
                param=exc.field,
                code="unsupported_parameter",
            ) from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            # A shape the translation did not foresee: the caller's to fix, never a 500.
            # Only the type: the message may quote the body.
            log.warning("untranslatable %s request: %s", kind, type(exc).__name__)
            raise InvalidRequest(
                f"The request could not be translated for `{upstream.name}`, which speaks "
                f"{_API_NAMES[upstream.family]}: a field has a value of an unexpected type.",
                code="unsupported_parameter",
            ) from None
        raise InvalidRequest(
            f"`/v1/{self._path.lstrip('/')}` cannot be served by `{upstream.name}`, which speaks "
            f"{_API_NAMES[upstream.family]}: only chat completions and messages are translated "
            "between dialects.",
            param="model",
            code="unsupported_endpoint",
        )

    def translates(self, upstream: Upstream) -> bool:
        return upstream.family != self._endpoint.dialect

    def translator(self, upstream: Upstream) -> ChunkFilter:
        """The stream translator from ``upstream``'s events to the client's."""
        if upstream.family == "anthropic":
            return AnthropicToOpenAIStream(
                include_usage=self.client_wants_usage, created=int(time.time())
            )
        return OpenAIToAnthropicStream()

    def translate_answer(self, upstream: Upstream, status: int, body: bytes) -> tuple[int, bytes]:
        """A whole answer (or error) of ``upstream`` in the client's dialect."""
        if upstream.family == "anthropic":
            if status >= 400:
                # OpenAI's clients know 503 as "overloaded", not Anthropic's 529.
                return (503 if status == 529 else status), anthropic_error_to_openai(status, body)
            return status, orjson.dumps(
                anthropic_message_to_openai_chat(orjson.loads(body), created=int(time.time()))
            )
        if status >= 400:
            return status, openai_error_to_anthropic(status, body)
        return status, orjson.dumps(openai_chat_to_anthropic_message(orjson.loads(body)))


_API_NAMES = {"anthropic": "Anthropic's Messages API", "openai": "OpenAI's API"}


def end_marker(endpoint: Endpoint, upstream: Upstream) -> bytes | None:
    """What the last bytes of a whole stream from ``upstream`` hold, if anything."""
    if upstream.family == "anthropic":
        return b"message_stop"
    if endpoint.stream_usage_option or endpoint.dialect == "anthropic":
        return b"[DONE]"
    return None
