"""Errors the gateway answers with, all in OpenAI's JSON shape.

    GatewayError                      status, type, code, message, param
    ├── InvalidRequest        400     malformed JSON, missing model/messages, bad fields
    ├── AuthenticationFailed  401     missing or unknown gateway key
    ├── PermissionDenied      403     a key asking for what it may not (e.g. a forced variant)
    ├── NotFound              404     unknown model (model_not_found) or path
    ├── MethodNotAllowed      405
    ├── RequestTimeout        408     the client did not send its body in time
    ├── Conflict              409     the gateway's state does not allow it (e.g. capture off)
    ├── PayloadTooLarge       413     body over server.max_body_bytes
    ├── RateLimited           429     a key over its requests/tokens per minute or its budget
    ├── BadGateway            502     upstream unreachable or cut off
    ├── Unavailable           503     a dependency of the gateway's own is down (e.g. its database)
    ├── GatewayTimeout        504     upstream too slow
    └── InternalError         500     a bug of ours; the details go to the log, not the client

``body_for("anthropic")`` gives the same error in Anthropic's shape (``{"type": "error",
"error": {"type", "message"}}``, the type from the status), for calls made in that dialect.

Upstream failures (router.errors) are turned into these in ``from_upstream``: the one place where
the two hierarchies meet.
"""

from __future__ import annotations

import orjson

from dialects.errors import anthropic_error_body, anthropic_error_type
from router.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: list[tuple[bytes, bytes]] = []

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)

    def body_for(self, dialect: str) -> bytes:
        """The error in the caller's dialect: ``openai`` or ``anthropic``."""
        if dialect == "anthropic":
            # Anthropic's errors have no `param`: like its own, the message starts with the field.
            message = f"{self.param}: {self.message}" if self.param else self.message
            return anthropic_error_body(anthropic_error_type(self.status), message)
        return self.body()


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    type = "insufficient_quota"
    code = "insufficient_quota"


class BadGateway(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class Unavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    code = "internal_error"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def from_upstream(exc: UpstreamError) -> GatewayError:
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(f"The upstream did not answer in time ({exc.detail}).")
    if isinstance(exc, UpstreamUnreachable):
        return BadGateway(f"The upstream could not be reached ({exc.detail}).")
    return BadGateway(
        f"The upstream answered incompletely ({exc.detail}).", code="upstream_disconnected"
    )
