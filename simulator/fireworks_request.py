"""How the simulated Fireworks API reads a call: the key, the account in the path, the
``{id}`` or ``{id}:verb`` resource, a JSON body whose unknown fields are refused (as protojson
refuses them), typed fields checked against their ranges, and pages of a list. ``FIREWORKS`` is
the application's key for the service's state (``fireworks_state.Store``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulator.files import record
from simulator.fireworks_state import (
    ACCOUNT_ID,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    RESOURCE_ID,
    FireworksError,
    Store,
    invalid,
)
from simulator.wire import loads_or_none

FIREWORKS = web.AppKey("simulator_fireworks", Store)


def origin_of(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def authenticate(request: web.Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    if not key and not request.headers.get("x-api-key", "").strip():
        raise FireworksError(
            "UNAUTHENTICATED",
            "unauthenticated: give your Fireworks API key as 'Authorization: Bearer <key>'",
        )


def account_of(request: web.Request) -> str:
    account = request.match_info["account"]
    if not ACCOUNT_ID.fullmatch(account):
        raise invalid(f"invalid account id {account!r}")
    return account


def split_rest(request: web.Request) -> tuple[str, str | None]:
    """The resource id and the custom method of ``{id}`` or ``{id}:verb``."""
    given = request.match_info["rest"]
    resource, sep, verb = given.partition(":")
    return resource, verb if sep else None


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    record(request, raw=raw)
    if not raw.strip():
        return {}
    body = loads_or_none(raw)
    if not isinstance(body, dict):
        raise invalid("the request body is not a JSON object")
    return body


def refuse_unknown(body: dict[str, Any], known: frozenset[str], where: str = "") -> None:
    for name in body:
        if name not in known:
            raise invalid(f'proto: unknown field "{where}{name}"')


def int_field(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # protojson takes int64 as strings too
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"invalid {name}: expected an integer from {low} to {high}, got {value!r}")
    return value


def float_field(body: dict[str, Any], name: str, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        raise invalid(f"invalid {name}: expected a number above 0 and at most {high:g}")
    return float(value)


def string_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"invalid {name}: expected a string")
    return value or None


def resource_id(value: str, what: str) -> str:
    if not RESOURCE_ID.fullmatch(value):
        raise invalid(
            f"invalid {what} {value!r}: start with a letter and use only lowercase letters, "
            "digits and hyphens (at most 63 characters)"
        )
    return value


def page_of(items: list[dict[str, Any]], request: web.Request, key: str) -> dict[str, Any]:
    try:
        size = int(request.query.get("pageSize") or PAGE_SIZE)
        start = int(request.query.get("pageToken") or 0)
    except ValueError:
        raise invalid("invalid pageSize or pageToken") from None
    size = max(1, min(MAX_PAGE_SIZE, size))
    start = max(0, start)
    page = items[start : start + size]
    more = start + size < len(items)
    return {key: page, "nextPageToken": str(start + size) if more else "", "totalSize": len(items)}
