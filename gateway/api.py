"""The gateway's own HTTP API (FastAPI): health, readiness, metrics, feedback and admin.

Everything not on the hot path. Every error it answers with has OpenAI's shape, like /v1.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from capture.errors import UnknownCall
from capture.errortext import describe_error
from capture.feedback import FeedbackIn, record_feedback
from capture.store import Store
from capture.writer import is_transient
from gateway import probes
from gateway.admin import AdminDenied
from gateway.capturing import AnyWriter
from gateway.errors import Conflict, GatewayError, NotFound, Unavailable, error_body
from gateway.metrics import Metrics
from gateway.rollouts import RolloutError
from gateway.runtime import RuntimeManager

log = logging.getLogger("gateway.api")


class GatewayState(Protocol):
    ready: bool
    manager: RuntimeManager
    metrics: Metrics
    store: Store | None
    writer: AnyWriter | None

    def sync_metrics(self) -> None: ...


def _openai_error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> Response:
    return Response(
        error_body(message, "invalid_request_error", param, code),
        status_code=status,
        media_type="application/json",
    )


def build_api(state: GatewayState, *routers: APIRouter) -> FastAPI:
    api = FastAPI(title="Distillation gateway", docs_url=None, redoc_url=None)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 408: "request_timeout"}.get(exc.status_code)
        response = _openai_error(exc.status_code, str(exc.detail), code=code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @api.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return Response(exc.body(), status_code=exc.status, media_type="application/json")

    @api.exception_handler(AdminDenied)
    async def _admin_denied(request: Request, exc: AdminDenied) -> Response:
        return _openai_error(exc.status, exc.message, code=exc.code)

    @api.exception_handler(RolloutError)
    async def _rollout_error(request: Request, exc: RolloutError) -> Response:
        return _openai_error(exc.status, exc.message, code=exc.code)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return Response(
            error_body(
                "The gateway failed to handle this request.", "server_error", None, "internal_error"
            ),
            status_code=500,
            media_type="application/json",
        )

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid" or tuple(first["loc"]) == ("body",):
            message = (
                "We could not parse the JSON body of your request."
                if first.get("type") == "json_invalid" or first.get("type") == "missing"
                else "The request body must be a JSON object."
            )
            return _openai_error(400, message, code="invalid_json")
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        message = str(first["msg"]).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = f"Unknown field `{param}`."
        elif first.get("type") == "missing":
            message = f"Missing required field `{param}`."
        elif param:
            message = f"`{param}`: {message}"
        return _openai_error(400, message, param=param)

    # GatewayApp answers GET of these before this app exists (gateway/probes.py); here for the
    # other methods' 405s and for an app built on its own.
    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return _answer(probes.healthz())

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        return _answer(probes.readyz(state))

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return _answer(await probes.metrics(state))

    def authenticated(request: Request) -> None:
        runtime = state.manager.current
        assert runtime is not None
        runtime.authenticator.authenticate(_header(request, "authorization"))

    @api.post("/v1/feedback", dependencies=[Depends(authenticated)])
    async def feedback(body: FeedbackIn) -> dict[str, Any]:
        """Feedback on a call, by the ``x-request-id`` the gateway returned with it."""
        if state.store is None:
            raise Conflict(
                "Capture is disabled on this gateway: there is no call to attach feedback to.",
                code="capture_disabled",
            )
        try:
            feedback_id = await record_feedback(state.store, body, state.writer)
        except UnknownCall:
            raise NotFound(
                f"No recorded call has the request id `{body.request_id}`.",
                param="request_id",
                code="request_not_found",
            ) from None
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "feedback not stored, the capture database is unreachable: %s", describe_error(exc)
            )
            raise Unavailable(
                "The capture database is unreachable right now; send the feedback again later.",
                code="capture_unavailable",
            ) from None
        return {"id": feedback_id, "object": "feedback", "request_id": body.request_id}

    for router in routers:
        api.include_router(router)
    return api


def _answer(answer: probes.Answer) -> Response:
    status, body, content_type = answer
    return Response(body, status_code=status, media_type=content_type)


def _header(request: Request, name: str) -> bytes | None:
    value = request.headers.get(name)
    return value.encode("latin-1") if value is not None else None
