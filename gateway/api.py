"""The gateway's own HTTP API (FastAPI): health, readiness, and everything not on the hot path.

Every error it answers with has OpenAI's shape, like the /v1 routes.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gateway.admin import AdminDenied
from gateway.errors import error_body


def build_api(is_ready: Callable[[], bool], *routers: APIRouter) -> FastAPI:
    api = FastAPI(
        title="Distillation gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else None
        return Response(
            error_body(str(exc.detail), "invalid_request_error", None, code),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )

    @api.exception_handler(AdminDenied)
    async def _admin_denied(request: Request, exc: AdminDenied) -> Response:
        return Response(
            error_body(exc.message, "invalid_request_error", None, exc.code),
            status_code=exc.status,
            media_type="application/json",
        )

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return Response(
            error_body(str(first["msg"]), "invalid_request_error", param, None),
            status_code=400,
            media_type="application/json",
        )

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Readiness: started, with provider clients open."""
        if is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, status_code=503)

    for router in routers:
        api.include_router(router)
    return api
