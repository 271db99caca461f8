"""What the gateway checks of a request body (OpenAI's or Anthropic's) before routing it: as
little as it can.

Every field other than ``model`` passes through untouched, unknown ones included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.jsonbytes import nesting_depth_exceeds

MAX_NESTING = 128
"""How deep arrays and objects may nest in a request body. The gateway must be able to
re-serialise and store what it acknowledges (orjson writes at most 254 levels, capture wraps the
body in a few more); no provider's API needs a tenth of this."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A POST endpoint whose calls are routed by the body's ``model``."""

    kind: str
    required: tuple[str, ...] = ()
    """Fields that must be present besides ``model``."""
    stream_usage_option: bool = False
    """Accepts ``stream_options.include_usage`` (chat and completions)."""
    dialect: str = "openai"
    """The wire format its calls are made in: ``openai`` or ``anthropic``."""


ROUTED_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint("chat", ("messages",), stream_usage_option=True),
    "/v1/completions": Endpoint("completions", stream_usage_option=True),
    "/v1/embeddings": Endpoint("embeddings", ("input",)),
    "/v1/responses": Endpoint("responses"),
    "/v1/messages": Endpoint("messages", ("messages", "max_tokens"), dialect="anthropic"),
}
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


def parse_request(endpoint: Endpoint, raw: bytes) -> tuple[dict[str, Any], str]:
    """The body as a dict and its model name, or InvalidRequest saying what is wrong."""
    if not raw:
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if nesting_depth_exceeds(raw, MAX_NESTING):
        raise InvalidRequest(
            f"The request body nests arrays and objects more than {MAX_NESTING} levels deep.",
            code="nesting_too_deep",
        )
    model = body.get("model")
    if model is None:
        raise InvalidRequest(
            "You must provide a model parameter.", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string.", param="model")
    for field in endpoint.required:
        if field not in body:
            raise InvalidRequest(
                f"Missing required parameter: '{field}'.",
                param=field,
                code="missing_required_parameter",
            )
    if endpoint.kind in ("chat", "messages") and not isinstance(body["messages"], list):
        raise InvalidRequest("`messages` must be an array.", param="messages")
    return body, model
