"""``build_dashboard(state)``: the page at ``/dashboard`` and its JSON API under ``/dashboard/api``.

    GET  /dashboard                  the page (signed in), else the sign-in form (401)
    GET  /dashboard?key=K            exchanges an admin key for the session cookie, then 303
    POST /dashboard/login            form field ``key``: the same
    POST /dashboard/logout           clears the cookie
    GET  /dashboard/static/...       the page's CSS and JS and the vendored uPlot (no key)
    GET  /dashboard/api/overview     per route, the variants side by side with their tests
    GET  /dashboard/api/timeseries   per route and variant, calls, share and p50/p95 per bucket
    GET  /dashboard/api/health       the capture writer's counters and the rows in the store
    GET  /dashboard/api/calls        the last calls, newest first, a page at a time
    GET  /dashboard/api/calls/{id}   one call with its request, response and feedback
    GET  /dashboard/api/rollouts     every route's rollout: status, each slice's stage and share
    GET  /dashboard/api/rollouts/{route}  one rollout: state, each slice's gates, its decisions
    GET  /dashboard/api/savings      per route and day, what students saved (``savings``)

The API takes the admin key as a bearer token or the session cookie; errors have OpenAI's
shape. Window parameters (overview, timeseries, calls, savings): ``window=15m|1h|24h|7d`` or
``start``/``end`` (ISO 8601).
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import re
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.pricing import PriceTable
from capture.rollouts import RolloutTable
from capture.store import Store
from capture.students import list_students
from gateway.capturing import AnyWriter
from gateway.dashboard import queries, rollouts, savings
from gateway.dashboard.access import COOKIE, SESSION_S, DashboardAccess
from gateway.dashboard.report import Configured, build_overview, build_series
from gateway.dashboard.window import Window, WindowError, parse_window
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.runtime import RuntimeManager

STATIC = Path(__file__).with_name("static")
PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
_CALL_ID = re.compile(r"[0-9a-f]{32}")
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_LOGIN_MESSAGES = {
    "": "",
    "invalid": "That is not an admin key of this gateway.",
    "expired": "Your session has ended: sign in again.",
    "disabled": "The dashboard is disabled: the configuration has no <code>admin.keys</code>.",
}


class DashboardState(Protocol):
    """What the dashboard needs of the gateway (``GatewayApp`` has it)."""

    store: Store | None
    writer: AnyWriter | None
    manager: RuntimeManager


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _html(name: str, status: int = 200, message: str = "") -> Response:
    text = (STATIC / name).read_text(encoding="utf-8")
    text = text.replace("<!--message-->", _LOGIN_MESSAGES[message])
    return Response(text, status_code=status, media_type="text/html", headers=_SECURITY_HEADERS)


def _static_files() -> dict[str, Path]:
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in STATIC.rglob("*")
        if path.is_file() and path.suffix in {".css", ".js", ".txt", ".svg"}
    }


def _window(window: str | None, start: str | None, end: str | None) -> Window:
    try:
        return parse_window(window, start, end)
    except WindowError as exc:
        raise InvalidRequest(str(exc), param="window", code="invalid_window") from None


def _references(values: list[str]) -> dict[str, str]:
    refs: dict[str, str] = {}
    for value in values:
        route, sep, variant = value.rpartition(":")
        if not sep or not route or not variant:
            raise InvalidRequest(
                f"`ref` must be route:variant, not {value!r}.", param="ref", code="invalid_ref"
            )
        refs[route] = variant
    return refs


def _cursor(value: str | None) -> queries.Cursor | None:
    if not value:
        return None
    when, _, call_id = value.rpartition("_")
    try:
        created = dt.datetime.fromisoformat(when)
    except ValueError:
        created = None
    if created is None or created.tzinfo is None or not _CALL_ID.fullmatch(call_id):
        raise InvalidRequest("`before` is not a cursor from this API.", param="before")
    return queries.Cursor(created, call_id)


def _cursor_text(cursor: queries.Cursor | None) -> str | None:
    return f"{cursor.created_at.isoformat()}_{cursor.id}" if cursor else None


def build_dashboard(state: DashboardState) -> APIRouter:
    access = DashboardAccess(lambda: state.manager.settings.admin)
    static_files = _static_files()
    router = APIRouter(prefix="/dashboard", include_in_schema=False)
    api = APIRouter(prefix="/api", dependencies=[Depends(access.require)])

    def engine() -> AsyncEngine:
        if state.store is None:
            raise Conflict(
                "Capture is disabled on this gateway: the dashboard reads the capture store.",
                code="capture_disabled",
            )
        return state.store.engine

    def configured() -> Configured:
        return {
            name: {variant: config.weight for variant, config in route.variants.items()}
            for name, route in state.manager.settings.routes.items()
        }

    def signed_in_response(request: Request, digest: str) -> Response:
        # Back to the page without the key in the address, keeping the other parameters.
        kept = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "key"])
        target = f"/dashboard?{kept}" if kept else "/dashboard"
        response = RedirectResponse(target, status_code=303, headers=_SECURITY_HEADERS)
        secure = (
            request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https"
        )
        response.set_cookie(
            COOKIE,
            access.session_for(digest),
            max_age=SESSION_S,
            path="/dashboard",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        return response

    @router.get("")
    async def page(request: Request) -> Response:
        if not access.enabled:
            return _html("login.html", 403, "disabled")
        key = request.query_params.get("key")
        if key is not None:
            digest = access.digest_of(key)
            if digest is None:
                return _html("login.html", 401, "invalid")
            return signed_in_response(request, digest)
        if access.signed_in(request):
            return _html("index.html")
        expired = COOKIE in request.cookies
        return _html("login.html", 401, "expired" if expired else "")

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not access.enabled:
            return _html("login.html", 403, "disabled")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        digest = access.digest_of(form.get("key", [""])[0])
        if digest is None:
            return _html("login.html", 401, "invalid")
        return signed_in_response(request, digest)

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/dashboard", status_code=303, headers=_SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
        return response

    @router.get("/static/{name:path}")
    async def static(name: str) -> Response:
        path = static_files.get(name)
        if path is None:
            raise NotFound(f"No dashboard file `{name}`.", code="not_found")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(
            path,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    @api.get("/overview")
    async def overview(
        window: str | None = None,
        start: str | None = None,
        end: str | None = None,
        ref: list[str] = Query(default=[]),  # noqa: B008 (FastAPI's way to take a list)
    ) -> Response:
        """Per route, its variants side by side, each tested against the route's reference."""
        span = _window(window, start, end)
        body = await build_overview(engine(), span, _references(ref), configured())
        return _json(body)

    @api.get("/timeseries")
    async def timeseries(
        window: str | None = None, start: str | None = None, end: str | None = None
    ) -> Response:
        span = _window(window, start, end)
        return _json(await build_series(engine(), span, configured()))

    @api.get("/health")
    async def health() -> Response:
        writer = state.writer
        capture: dict[str, Any] = {"enabled": writer is not None}
        if writer is not None:
            capture.update(writer.stats())
        store: dict[str, Any] | None = None
        if state.store is not None:
            async with state.store.engine.connect() as connection:
                counts = await queries.store_counts(await queries.tuned(connection))
            store = {
                "dialect": state.store.dialect,
                "calls": counts.calls,
                "feedback": counts.feedback,
                "oldest": counts.oldest,
                "newest": counts.newest,
            }
        return _json({"capture": capture, "store": store})

    @api.get("/calls")
    async def recent(
        window: str | None = None,
        start: str | None = None,
        end: str | None = None,
        route: str | None = None,
        variant: str | None = None,
        before: str | None = None,
        limit: int = Query(default=PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    ) -> Response:
        """A page of calls, newest first; ``next`` is the ``before`` of the following page."""
        span = _window(window, start, end)
        async with engine().connect() as connection:
            rows, following = await queries.recent_calls(
                await queries.tuned(connection),
                span,
                limit=limit,
                before=_cursor(before),
                route=route or None,
                variant=variant or None,
            )
        return _json({"calls": rows, "next": _cursor_text(following), "limit": limit})

    @api.get("/students")
    async def registered_students(route: str | None = None) -> Response:
        """Every registered student, newest first, with its lineage (which data made it)."""
        return _json({"students": await list_students(engine(), route or None)})

    @api.get("/calls/{call_id}")
    async def call(call_id: str) -> Response:
        """One call as stored: request and response JSON, error, tags, and its feedback."""
        store_engine = engine()
        assert state.store is not None and store_engine is state.store.engine
        normalised = call_id.replace("-", "").lower()
        row = await state.store.get_call(normalised) if _CALL_ID.fullmatch(normalised) else None
        if row is None:
            raise NotFound(f"No recorded call has the id `{call_id}`.", code="call_not_found")
        row["feedback"] = await state.store.feedback_for(normalised)
        return _json(row)

    @api.get("/rollouts")
    async def rollout_list() -> Response:
        """Every route's rollout: status, incumbent, candidate, each slice's stage and share."""
        return _json({"rollouts": await rollouts.list_view(RolloutTable(engine()))})

    @api.get("/rollouts/{route:path}")
    async def rollout_detail(route: str) -> Response:
        """One route's rollout: its state, each slice's gates, and the timeline of decisions."""
        view = await rollouts.detail_view(RolloutTable(engine()), route, time.time())
        if view is None:
            raise NotFound(f"The route `{route}` has no rollout.", code="rollout_not_found")
        return _json(view)

    @api.get("/savings")
    async def savings_by_day(
        window: str | None = None, start: str | None = None, end: str | None = None
    ) -> Response:
        """Per route and day: student calls and cost, the incumbent's price for the same
        tokens, gross, the cost of evaluating (judge, counterfactual, shadow), net."""
        span = _window(window, start, end)
        table = RolloutTable(engine())
        settings = state.manager.settings
        body = await savings.build_savings(
            table.engine,
            settings.routes,
            await rollouts.incumbents(table),
            PriceTable(settings.capture.prices),
            span,
        )
        return _json(body)

    router.include_router(api)
    return router
