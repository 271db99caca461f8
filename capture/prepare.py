"""From a raw ``CallRecord`` to a ``calls`` row: parse, assemble, price, redact.

Runs in the writer's background task, never on the hot path, and never raises for bad input:
a body that is not JSON is stored as ``{"_raw": text}``; a record that cannot be prepared at all
is stored with its identifying fields, no bodies, and an ``error`` saying why.

Calls in Anthropic's dialect (a client's ``/v1/messages`` call, or any call answered by an
Anthropic upstream) also get a normalised view, ``normalized``: ``{"request": <OpenAI chat
request>, "response": <chat.completion or None>}`` made by the ``normalize`` function the
gateway hands over (``dialects.capture.chat_view``) from the parsed, redacted request and the
assembled, redacted response, so the exporter reads every chat-like call in one shape. A half
that was in OpenAI's format already (the request of a chat call answered by Claude) is the
stored body itself, and is not stored twice: its place in the view is None (prompts are most of
a store's size). Calls whose client and upstream both speak OpenAI's format have no view
(NULL), as do calls to other endpoints. The normaliser is guarded: when it raises, or returns
something that is not a JSON object, the view is NULL and ``Preparer.normalize_failed`` counts
it; the record is stored all the same.

Every string stored goes through the call's redaction, not only the bodies: the user (a client
may send its key as ``user``), the tags (keys and values), the error text, the model and the
names of the row, in both paths. A string is redacted whole and cut to its column afterwards, so
no piece of a secret survives at the cut.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from capture.assemble import assemble_stream, summarize
from capture.config import CaptureSettings
from capture.content import CONTENT_KEY, FLAG, Cutter, Parts, substitute
from capture.events import Assembled
from capture.pricing import PriceTable
from capture.record import CallRecord
from capture.redaction import ALL_KINDS, Redactor
from capture.schema import DIALECT_LENGTH, ID_LENGTH, NAME_LENGTH

RAW_TEXT_LIMIT = 64 * 1024
"""A body that is not JSON keeps at most this many characters of its text."""
MAX_TAGS = 64
TAG_KEY_LENGTH = 64
TAG_VALUE_LENGTH = 512

Row = dict[str, Any]

Normalize = Callable[[Any, str, Any, str], dict[str, Any] | None]
"""``normalize(request, request_dialect, response, response_dialect)``: the chat view of a call
(``dialects.capture.chat_view``); dialects are "openai" or "anthropic"."""

NORMALIZED_ENDPOINTS = frozenset({"chat", "messages"})
"""Endpoints whose calls get a normalised view when either side speaks Anthropic's dialect."""


@dataclass(slots=True)
class Prepared:
    row: Row
    unpriced_model: str | None = None
    """The model whose usage is known but whose price is not (for the writer's counter)."""


ERROR_LENGTH = 2000


def _clip(value: Any, length: int, redactor: Redactor | None = None) -> str | None:
    """``value`` as stored in a column: a string without NUL, redacted, cut to ``length``."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\x00", "")
    if redactor:
        text = redactor.redact_text(text)
    return text[:length]


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_body(body: bytes) -> Any:
    """The parsed JSON of a body, or ``{"_raw": text}`` when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        text = bytes(body[: RAW_TEXT_LIMIT * 4]).decode("utf-8", "replace")[:RAW_TEXT_LIMIT]
        return {"_raw": text.replace("\x00", ""), "_bytes": len(body)}


def _without_nul(value: Any) -> Any:
    """``value`` with NUL characters removed from every string (PostgreSQL rejects them)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _may_hold_nul(parts: Iterable[bytes]) -> bool:
    return any(b"\\u0000" in part for part in parts)


def without_vectors(body: Any) -> Any:
    """An embeddings response without its vectors, each replaced by its dimension count.

    Vectors are large (a 1536-float vector is ~30 KB of JSON), can be recomputed from the
    stored input, and are of no use to the dashboards or to fine-tuning data.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "embedding" in item:
                vector = item.pop("embedding")
                size = len(vector) if isinstance(vector, list | str) else None
                key = "dimensions" if isinstance(vector, list) else "embedding_chars"
                item[key] = size
    return body


_MARK = "gateway."


def merge_tags(
    header_tags: Mapping[str, str], request: Any, redactor: Redactor | None = None
) -> dict[str, str]:
    """``x-gateway-tags`` plus the body's OpenAI ``metadata``; the header wins a conflict. Keys
    and values are redacted before they are cut to their length. The ``gateway.*`` marks
    (ledger.MARK_TAGS) come only from the header tags, which the gateway strips of a client's:
    the body's are dropped, so a client cannot mark its own calls."""
    tags: dict[str, str] = {}
    metadata = request.get("metadata") if isinstance(request, dict) else None
    sources: list[tuple[Mapping[Any, Any], bool]] = [(header_tags, True)]
    if isinstance(metadata, dict):
        sources.append((metadata, False))
    for source, may_mark in sources:
        for key, value in source.items():
            if len(tags) >= MAX_TAGS:
                break
            if not isinstance(key, str):
                continue
            if not isinstance(value, str):
                value = orjson.dumps(value, default=str).decode()
            stored_key = _clip(key, TAG_KEY_LENGTH, redactor)
            # the mark is judged on the key as it is stored (NULs gone, cut, redacted)
            if not may_mark and stored_key is not None and is_mark(stored_key):
                continue
            if stored_key is not None and stored_key not in tags:
                tags[stored_key] = _clip(value, TAG_VALUE_LENGTH, redactor) or ""
    return tags


def is_mark(key: str) -> bool:
    """Whether a tag key is one of the gateway's own marks (``gateway.*``, however spaced or
    cased), which only the gateway may set."""
    return key.replace("\x00", "").strip().lower().startswith(_MARK)


def _join_errors(*errors: str | None) -> str | None:
    present = [e for e in errors if e]
    return "; ".join(present) if present else None


def wire_dialect(api: Any) -> str:
    """The wire format of a dialect or upstream API: "anthropic", else "openai" (Azure OpenAI
    and every OpenAI-compatible server speak OpenAI's)."""
    return "anthropic" if api == "anthropic" else "openai"


class Preparer:
    def __init__(self, settings: CaptureSettings, normalize: Normalize | None = None) -> None:
        self.normalize = normalize
        self.normalize_failed = 0
        """Records whose normaliser raised or returned something other than a JSON object."""
        self.prices = PriceTable(settings.prices)
        self._default_redactor = Redactor(settings.redact)
        self._redactors: dict[tuple[str, ...], Redactor] = {}
        self._strictest = Redactor(ALL_KINDS)
        """For a record whose own redaction cannot be built: more is hidden, never less."""
        self.cutter = Cutter(settings.content_min_bytes) if settings.content_store else None
        """With ``capture.content_store``: large parts of requests are cut out
        (``capture.content``) and go with the row under ``CONTENT_KEY``."""

    def redactor_for(self, kinds: tuple[str, ...] | None) -> Redactor:
        if kinds is None:
            return self._default_redactor
        redactor = self._redactors.get(kinds)
        if redactor is None:
            redactor = self._redactors[kinds] = Redactor(kinds)
        return redactor

    def prepare(self, record: CallRecord) -> Prepared:
        """The row for ``record``; never raises for a record with a usable id."""
        try:
            return self._prepare(record)
        except Exception as exc:
            failure = exc
        try:
            redactor = self.redactor_for(record.redact)
        except Exception:
            redactor = self._strictest
        return Prepared(fallback_row(record, failure, redactor))

    def _prepare(self, record: CallRecord) -> Prepared:
        redactor = self.redactor_for(record.redact)
        request = parse_body(record.request_body)
        request_dialect = wire_dialect(record.dialect)
        response_dialect = wire_dialect(record.upstream_api)
        # OpenAI's ``metadata`` are tags; Anthropic's holds the user id, not tags.
        tags = merge_tags(record.tags, request if request_dialect == "openai" else None, redactor)
        assembled = self._assemble(record)
        response = assembled.response
        error = _join_errors(record.error, assembled.note)
        if _may_hold_nul([record.request_body]):
            request = _without_nul(request)
        if _may_hold_nul([record.response_body or b"", b"".join(record.stream_chunks or ())]):
            response = _without_nul(response)
        parts: Parts = {}
        cut = None
        if self.cutter is not None:
            # Large parts cut out and redacted one by one (a part seen before is not redacted
            # again); the rest is redacted below; the whole redacted request is put back
            # together for the normaliser.
            cut = self.cutter.cut(request, parts, redactor.redact if redactor else None)
            if parts:
                request = cut
        if redactor:
            request = redactor.redact(request)
            response = redactor.redact(response)
        if parts:
            cut, request = request, substitute(request, parts)
        normalized = None
        if (request_dialect == "anthropic" or response_dialect == "anthropic") and (
            record.endpoint in NORMALIZED_ENDPOINTS
        ):
            normalized = self._normalized(request, request_dialect, response, response_dialect)
        usage = assembled.usage
        cost, unpriced = self._cost(record, assembled)
        row: Row = {
            "id": record.id[:ID_LENGTH],
            "created_at": dt.datetime.fromtimestamp(record.started_at, dt.UTC),
            "endpoint": _clip(record.endpoint, 16),
            **_names(record, redactor),
            **_dialects(record),
            "request": request,
            "response": response,
            "normalized": normalized,
            "status": int(record.status),
            "error": _clip(error, len(error), redactor) if error is not None else None,
            "finish_reason": _clip(assembled.finish_reason, 40, redactor),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cost_usd": cost,
            "total_ms": float(record.total_ms),
            "ttft_ms": _float(record.ttft_ms),
            "upstream_ms": _float(record.upstream_ms),
            "overhead_ms": float(record.overhead_ms),
            "user_key": _clip(record.user_key, NAME_LENGTH, redactor),
            "tags": tags,
            "stream": bool(record.stream),
            "shadow_of": _clip(record.shadow_of, ID_LENGTH),
            "cache_hit": bool(record.cache_hit),
        }
        if self.cutter is not None:
            self._cut_parts(row, self.cutter, cut if parts else None, parts)
        return Prepared(row, unpriced)

    @staticmethod
    def _cut_parts(row: Row, cutter: Cutter, cut: Any, parts: Parts) -> None:
        """The row's request (already cut), its response and its normalized view with their
        large parts replaced by references (``capture.content``)."""
        if cut is not None:
            row["request"] = cut
        row["response"] = cutter.cut_response(row["response"], parts)
        view = row["normalized"]
        if view is not None:
            view = dict(view)
            if isinstance(view.get("request"), dict):
                view["request"] = cutter.cut(view["request"], parts)
            if isinstance(view.get("response"), dict):
                view["response"] = cutter.cut_response(view["response"], parts)
            row["normalized"] = view
        row[FLAG] = True if parts else None
        if parts:
            row[CONTENT_KEY] = parts

    def _normalized(
        self, request: Any, request_dialect: str, response: Any, response_dialect: str
    ) -> dict[str, Any] | None:
        """The normaliser's view of the call; None (and counted) when it fails."""
        if self.normalize is None:
            return None
        try:
            view = self.normalize(request, request_dialect, response, response_dialect)
            if view is None:
                return None
            if isinstance(view, dict):
                # A half in OpenAI's format already is the stored body: not stored twice.
                if request_dialect == "openai" and _same(view.get("request"), request):
                    view = {**view, "request": None}
                if response_dialect == "openai" and _same(view.get("response"), response):
                    view = {**view, "response": None}
                orjson.dumps(view)  # it must be storable as JSON
                return view
        except Exception:
            pass
        self.normalize_failed += 1
        return None

    def _assemble(self, record: CallRecord) -> Assembled:
        if record.stream_chunks is not None:
            return assemble_stream(
                str(record.endpoint), record.stream_chunks, wire_dialect(record.upstream_api)
            )
        if record.response_body is not None:
            body = parse_body(record.response_body)
            if record.endpoint == "embeddings":
                body = without_vectors(body)
            return summarize(str(record.endpoint), body)
        return Assembled(None)

    def _cost(self, record: CallRecord, assembled: Assembled) -> tuple[float | None, str | None]:
        """The call's cost and, when its usage is known but its model has no price, the model.

        The upstream model is priced (its name is the one in the configuration's overrides);
        the response's own model name is the fallback (e.g. an Azure deployment name answers
        as ``gpt-4o-2024-08-06``). Never the requested model: that is a route alias.
        """
        usage = assembled.usage
        if usage.prompt_tokens is None:
            return None, None
        if record.cache_hit:
            return 0.0, None  # answered from the gateway's cache: nobody was billed
        candidates = (record.upstream_model, assembled.model)
        for model in candidates:
            if model:
                cost = self.prices.cost_usd(
                    model,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.cache_write_tokens,
                )
                if cost is not None:
                    return cost, None
        unpriced = next((m for m in candidates if m), None) or "(unknown)"
        return None, unpriced


def _names(record: CallRecord, redactor: Redactor | None) -> Row:
    """The route, variant, provider and models of a record, as stored (redacted like the rest:
    the requested model is the client's)."""
    return {
        "route": _clip(record.route, NAME_LENGTH, redactor),
        "variant": _clip(record.variant, NAME_LENGTH, redactor),
        "provider": _clip(record.provider, NAME_LENGTH, redactor),
        "requested_model": _clip(record.requested_model, NAME_LENGTH, redactor),
        "upstream_model": _clip(record.upstream_model, NAME_LENGTH, redactor),
    }


def _same(half: Any, body: Any) -> bool:
    return half is not None and (half is body or half == body)


def _dialects(record: CallRecord) -> Row:
    """The client's dialect and the upstream's API, as given (only the gateway sets them)."""
    return {
        "dialect": _clip(record.dialect, DIALECT_LENGTH),
        "upstream_api": _clip(record.upstream_api, DIALECT_LENGTH),
    }


def fallback_row(record: CallRecord, exc: BaseException, redactor: Redactor | None = None) -> Row:
    """What is known of a record that could not be prepared, with the reason in ``error`` after
    the record's own error (both redacted: the reason may quote the record)."""
    try:
        created = dt.datetime.fromtimestamp(float(record.started_at), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        created = dt.datetime.now(dt.UTC)
    status = record.status if isinstance(record.status, int) else 0
    note = f"capture could not prepare this record: {type(exc).__name__}: {exc}"
    error = _join_errors(
        _clip(record.error, ERROR_LENGTH, redactor), _clip(note, ERROR_LENGTH, redactor)
    )
    return {
        "id": str(record.id)[:ID_LENGTH],
        "created_at": created,
        "endpoint": _clip(record.endpoint, 16) or "unknown",
        **_names(record, redactor),
        **_dialects(record),
        "request": None,
        "response": None,
        "normalized": None,
        "status": status,
        "error": error,
        "finish_reason": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "cached_tokens": None,
        "cache_write_tokens": None,
        "cost_usd": None,
        "total_ms": _float(record.total_ms) or 0.0,
        "ttft_ms": _float(record.ttft_ms),
        "upstream_ms": _float(record.upstream_ms),
        "overhead_ms": _float(record.overhead_ms) or 0.0,
        "user_key": _clip(record.user_key, NAME_LENGTH, redactor),
        "tags": {},
        "stream": bool(record.stream),
        "shadow_of": _clip(record.shadow_of, ID_LENGTH),
        "cache_hit": bool(record.cache_hit),
    }
