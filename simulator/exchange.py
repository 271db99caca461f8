"""What every request goes through first: read, record, decide latency and faults.

Headers that steer one request (they take precedence over the profile):

    x-sim-ttft-ms         time to first token, ms (a number); disables the profile's jitter
    x-sim-token-ms        time per further token, ms (a number); disables the profile's jitter
    x-sim-fault           429 | 500 | 503 | 529 | timeout | drop | error-event
    x-sim-fault-rate      probability that x-sim-fault fires, 0..1 (default 1)
    x-sim-fault-delay-ms  how long `timeout` stalls before answering normally (default 30000)
    x-sim-fault-after     how many stream events `drop` or `error-event` send first (default 2)

`error-event` ends a stream with the dialect's own error event after that many events (OpenAI's
``data: {"error": ...}``, the Responses API's and Anthropic's ``event: error``); a call that
does not stream gets the matching error status instead. Each dialect maps the statuses to its
own errors: OpenAI's endpoints answer 529 as a 503, Anthropic's answer 503 as its 529.

The steps are separate so each dialect can put its own checks between them: ``record`` (read
and log the request), ``triage`` (its fault and latency), ``settle`` (stall for `timeout`,
keep `drop` and `error-event` for the stream, else raise the dialect's error). ``begin`` is
the OpenAI dialect's sequence; Azure's routes reuse it with a gate (the key and api-version
checks) and the deployment as the model, set on the request (``GATE``, ``DEPLOYMENT``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from simulator.anthropic_wire import AnthropicError, is_anthropic_path
from simulator.profile import (
    DEFAULT_DROP_AFTER,
    DEFAULT_TIMEOUT_DELAY_MS,
    FAULT_KINDS,
    FaultRule,
    Latency,
    Profile,
)
from simulator.recorder import RequestLog
from simulator.wire import InvalidRequest, OpenAIError, ShapedError, json_object, loads_or_none

log = logging.getLogger("simulator")

H_TTFT = "x-sim-ttft-ms"
H_TOKEN = "x-sim-token-ms"
H_FAULT = "x-sim-fault"
H_FAULT_RATE = "x-sim-fault-rate"
H_FAULT_DELAY = "x-sim-fault-delay-ms"
H_FAULT_AFTER = "x-sim-fault-after"

_UNIT = float(1 << 32)
_CACHED_MODELS = 1024


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    delay_ms: float = DEFAULT_TIMEOUT_DELAY_MS
    after: int = DEFAULT_DROP_AFTER


class HeaderError(ValueError):
    def __init__(self, header: str, expected: str) -> None:
        super().__init__(f"Invalid header '{header}': expected {expected}.")
        self.header = header


class Simulator:
    """The per-app state: profile, request log, and the RNG for fault rates."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.log = RequestLog()
        self._fault_rng = random.Random(profile.seed)
        self._latency: dict[str, Latency] = {}
        self._faults: dict[str, tuple[FaultRule, ...]] = {}

    def latency(self, model: str, headers: dict[str, str]) -> Latency:
        ttft = headers.get(H_TTFT)
        token = headers.get(H_TOKEN)
        latency = self._latency.get(model)
        if latency is None:
            if len(self._latency) >= _CACHED_MODELS:
                self._latency.clear()
            latency = self._latency[model] = self.profile.latency_for(model)
        if ttft is None and token is None:
            return latency
        return Latency(
            ttft_ms=latency.ttft_ms if ttft is None else _number(H_TTFT, ttft),
            token_ms=latency.token_ms if token is None else _number(H_TOKEN, token),
            quality=latency.quality,
        )

    def fault(self, model: str, headers: dict[str, str]) -> Fault | None:
        kind = headers.get(H_FAULT)
        if kind is not None:
            if kind not in FAULT_KINDS:
                raise HeaderError(H_FAULT, "one of " + ", ".join(FAULT_KINDS))
            rate = headers.get(H_FAULT_RATE)
            if rate is not None and self._fault_rng.random() >= _number(H_FAULT_RATE, rate):
                return None
            delay = headers.get(H_FAULT_DELAY)
            after = headers.get(H_FAULT_AFTER)
            return Fault(
                kind,
                DEFAULT_TIMEOUT_DELAY_MS if delay is None else _number(H_FAULT_DELAY, delay),
                DEFAULT_DROP_AFTER if after is None else int(_number(H_FAULT_AFTER, after)),
            )
        rules = self._faults.get(model)
        if rules is None:
            if len(self._faults) >= _CACHED_MODELS:
                self._faults.clear()
            rules = self._faults[model] = self.profile.faults_for(model)
        for rule in rules:
            if rule.rate >= 1.0 or self._fault_rng.random() < rule.rate:
                return Fault(rule.kind, rule.delay_ms, rule.after)
        return None


STATE = web.AppKey("simulator", Simulator)


MAX_HEADER_NUMBER = 3_600_000.0
"""The largest number a steering header takes (an hour, in ms): beyond it, and for infinity,
a call would wait forever or overflow a timer."""


def _number(header: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise HeaderError(header, "a number") from None
    if not 0 <= number <= MAX_HEADER_NUMBER:  # NaN included
        raise HeaderError(header, f"a number from 0 to {MAX_HEADER_NUMBER:.0f}")
    return number


@dataclass(slots=True)
class Call:
    """One parsed /v1 request and how the simulator will treat it."""

    body: dict[str, Any]
    model: str
    latency: Latency
    fault: Fault | None

    @property
    def cut_after(self) -> int | None:
        """Stream events to send before cutting the connection; None when not dropping."""
        fault = self.fault
        return fault.after if fault is not None and fault.kind == "drop" else None

    @property
    def error_after(self) -> int | None:
        """Stream events to send before the error event; None without an `error-event` fault."""
        fault = self.fault
        return fault.after if fault is not None and fault.kind == "error-event" else None

    def delays(self, seed: int) -> tuple[float, float]:
        """(ttft, per-token) in seconds, with the jitter drawn from the content seed."""
        latency = self.latency
        factor = 1.0
        if latency.jitter:
            factor += latency.jitter * (2.0 * ((seed >> 16) & 0xFFFFFFFF) / _UNIT - 1.0)
        return latency.ttft_ms * factor / 1000.0, latency.token_ms * factor / 1000.0


SERVER_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! (simulated)"
)


def fault_error(kind: str) -> OpenAIError:
    """The OpenAI error for an injected fault that answers with a status."""
    if kind == "429":
        return OpenAIError(
            429,
            "Rate limit reached for requests (simulated). Please try again in 1s.",
            "requests",
            None,
            "rate_limit_exceeded",
            headers={"retry-after": "1", "retry-after-ms": "1000"},
        )
    if kind in ("503", "529"):
        return OpenAIError(
            503,
            "The engine is currently overloaded, please try again later. (simulated)",
            "server_error",
        )
    return OpenAIError(500, SERVER_ERROR_MESSAGE, "server_error")


Gate = Callable[[web.Request, dict[str, str]], None]
"""A check run on a recorded request before its body is read; raises the error to answer."""

GATE: web.RequestKey[Gate] = web.RequestKey("simulator.gate")
DEPLOYMENT = web.RequestKey("simulator.deployment", str)
"""The model a route decides (Azure's deployment), over the body's ``model``."""


async def record(request: web.Request) -> tuple[bytes, dict[str, str]]:
    """Read the body and log the request: its bytes and its headers (names lower-cased)."""
    raw = await request.read()
    headers = {key.lower(): value for key, value in request.headers.items()}
    # The log keeps the bytes and parses them when read: nothing more to do per call here.
    request.app[STATE].log.add(request.method, request.path, request.query_string, headers, raw=raw)
    return raw, headers


def triage(
    request: web.Request, model: str, headers: dict[str, str]
) -> tuple[Fault | None, Latency]:
    """The fault (if any) and latency for this call; HeaderError for a bad steering header."""
    simulator = request.app[STATE]
    return simulator.fault(model, headers), simulator.latency(model, headers)


async def settle(
    fault: Fault | None, streaming: bool, error: Callable[[str], Exception]
) -> Fault | None:
    """What is left of a fault once it has acted before the answer.

    `timeout` stalls, then the call goes on (None); `drop` stays for the answer to act on, and so
    does `error-event` on a stream; any other fault raises ``error(kind)``, the dialect's error
    (``error-event`` when the call does not stream).
    """
    if fault is None:
        return None
    if fault.kind == "timeout":
        await asyncio.sleep(fault.delay_ms / 1000.0)
        return None
    if fault.kind == "drop" or (fault.kind == "error-event" and streaming):
        return fault
    raise error(fault.kind)


async def begin(request: web.Request, require_json: bool = True) -> Call:
    """Read, record and triage a request: the Call to serve, else raises the OpenAIError.

    With ``require_json`` a body that is not a JSON object is answered 400 as OpenAI does;
    without it (the passthrough) any body is accepted and recorded as null unless it is JSON.
    Injected 429/500/503 faults raise here; `timeout` waits here, then the call goes on.
    """
    raw, headers = await record(request)
    gate = request.get(GATE)
    if gate is not None:
        gate(request, headers)
    body: Any
    if require_json:
        body = json_object(raw)
    else:
        body = loads_or_none(raw)
        if not isinstance(body, dict):
            body = {}
    model = request.get(DEPLOYMENT)
    if model is None:
        model = body.get("model")
        model = model if isinstance(model, str) else ""
    try:
        fault, latency = triage(request, model, headers)
    except HeaderError as error:
        raise InvalidRequest(str(error), error.header, "invalid_header") from None
    fault = await settle(fault, body.get("stream") is True, fault_error)
    return Call(body, model, latency, fault)


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection with nothing more sent; aiohttp then skips the returned response."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response()


async def respond(
    request: web.Request,
    call: Call,
    payload: Any,
    wait_s: float,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON answer after ``wait_s``, or a cut connection under a `drop` fault."""
    if wait_s > 0:
        await asyncio.sleep(wait_s)
    if call.cut_after is not None:
        return drop_connection(request)
    return web.Response(
        body=orjson.dumps(payload), headers=headers, content_type="application/json"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def shaped_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answered in the shape of the path's dialect (Anthropic's under /v1/messages,
    else OpenAI's): aiohttp's own (413 for a body over the limit, 404, 405), a body that cannot
    be read (bad chunking or content encoding) as a 400, and anything unforeseen as a 500 with
    the reason logged, never a text/plain traceback page."""
    try:
        return await handler(request)
    except ShapedError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
        if is_anthropic_path(request.path):
            raise AnthropicError(exc.status, message, headers=_kept(exc)) from None
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        raise OpenAIError(exc.status, message, kind, headers=_kept(exc)) from None
    except (RequestPayloadError, HttpProcessingError) as exc:
        message = f"The request body could not be read: {exc}"
        if is_anthropic_path(request.path):
            raise AnthropicError(400, message) from None
        raise InvalidRequest(message) from None
    except (ConnectionError, asyncio.CancelledError):
        raise  # the client went away
    except Exception:
        log.exception("the simulator failed on %s %s", request.method, request.path)
        message = "The simulator failed on this request (see its log)."
        if is_anthropic_path(request.path):
            raise AnthropicError(500, message) from None
        raise OpenAIError(500, message, "server_error") from None


def _kept(exc: web.HTTPException) -> dict[str, str]:
    """The headers of aiohttp's error worth keeping (``Allow`` of a 405)."""
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow is not None else {}
