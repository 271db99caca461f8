"""The savings ledger's sums: what students answered, and what evaluating them cost, per route
and day, from the ``calls`` table (a SQL query, and the same as a pure function over rows).

How calls are marked (the contract for the gateway's wiring: it sets these tags on the calls it
makes itself, and must drop them from clients' tags so that a client cannot mark its own calls):

- ``gateway.purpose``: ``judge`` for a judge's call, ``counterfactual`` for a background
  teacher call made to keep judged pairs coming once the candidate answers live traffic;
- ``gateway.rollout``: the route whose rollout the call serves (a judge runs on its own route);
  without it, the call's own route.
Judge calls are not training data: the exporter's selection always leaves them out; a
``counterfactual`` call is a shadow copy (a teacher's answer), left out unless shadow copies are
asked for (`MARK_TAGS` names them, with `gateway.forced`).

Kinds of calls, for a route with student variants:
- ``student``: answered by a student variant of the route (not a shadow copy, status 200, not
  marked): the calls that saved money;
- ``shadow``: shadow copies answered by a student variant (the cost of shadow evaluation);
- ``judge`` and ``counterfactual``: marked calls serving the route's rollout.
Token sums cover the priced calls only (``cost_usd`` and ``prompt_tokens`` known), so the
incumbent's price for the same tokens is compared with what the same calls cost; ``unpriced``
counts the others. Days are UTC dates, ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.schema import calls

PURPOSE_TAG: Final = "gateway.purpose"
ROLLOUT_TAG: Final = "gateway.rollout"
JUDGE: Final = "judge"
COUNTERFACTUAL: Final = "counterfactual"
FORCED_TAG: Final = "gateway.forced"
"""Set (``1``) on a call whose variant the client forced (``x-gateway-variant``): not drawn by
the route's weights, so not evidence for a rollout."""
MARK_TAGS: Final = (PURPOSE_TAG, ROLLOUT_TAG, FORCED_TAG)
KINDS: Final = ("student", "shadow", JUDGE, COUNTERFACTUAL)


@dataclass(frozen=True)
class UsageSums:
    route: str
    day: str
    kind: str
    calls: int
    unpriced: int
    input_tokens: int
    """Uncached prompt tokens (prompt - cache reads - cache writes) of the priced calls."""
    cached_tokens: int
    cache_write_tokens: int
    completion_tokens: int
    cost_usd: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _day(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d")


def _kind(row: Mapping[str, Any], students: Mapping[str, Sequence[str]]) -> tuple[str, str] | None:
    tags = row.get("tags") or {}
    purpose = tags.get(PURPOSE_TAG)
    if purpose in (JUDGE, COUNTERFACTUAL):
        route = str(tags.get(ROLLOUT_TAG) or row.get("route"))
        return (route, str(purpose)) if route in students else None
    route, variant = str(row.get("route")), row.get("variant")
    if purpose is not None or row.get("route") is None or route not in students:
        return None
    if variant not in students[route] or row.get("status") != 200:
        return None
    return route, ("shadow" if row.get("shadow_of") is not None else "student")


def sums_from_rows(
    rows: Iterable[Mapping[str, Any]], students: Mapping[str, Sequence[str]]
) -> list[UsageSums]:
    """The sums, from rows of ``calls`` (dicts of its columns), sorted by route, day, kind."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        found = _kind(row, students)
        if found is None:
            continue
        key = (found[0], _day(row["created_at"]), found[1])
        a = acc.setdefault(key, [0, 0, 0, 0, 0, 0, 0.0])
        a[0] += 1
        cost, prompt = row.get("cost_usd"), row.get("prompt_tokens")
        if cost is None or prompt is None:
            a[1] += 1
            continue
        cached = row.get("cached_tokens") or 0
        written = row.get("cache_write_tokens") or 0
        a[2] += prompt - cached - written
        a[3] += cached
        a[4] += written
        a[5] += row.get("completion_tokens") or 0
        a[6] += cost
    return [
        UsageSums(r, d, k, int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]), a[6])
        for (r, d, k), a in sorted(acc.items())
    ]


async def usage_sums(
    engine: AsyncEngine,
    students: Mapping[str, Sequence[str]],
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[UsageSums]:
    """`sums_from_rows` as one SQL query (SQLite and PostgreSQL), over [since, until)."""
    if not students:
        return []
    c = calls.c
    purpose = c.tags[PURPOSE_TAG].as_string()
    rollout = sa.func.coalesce(c.tags[ROLLOUT_TAG].as_string(), c.route)
    marked = sa.and_(purpose.in_((JUDGE, COUNTERFACTUAL)), rollout.in_(list(students)))
    answered = sa.and_(
        purpose.is_(None),
        c.status == 200,
        sa.or_(*(sa.and_(c.route == r, c.variant.in_(list(v))) for r, v in students.items())),
    )
    route = sa.case((purpose.is_(None), c.route), else_=rollout)
    kind = sa.case(
        (purpose == JUDGE, sa.literal(JUDGE)),
        (purpose == COUNTERFACTUAL, sa.literal(COUNTERFACTUAL)),
        (c.shadow_of.is_not(None), sa.literal("shadow")),
        else_=sa.literal("student"),
    )
    if engine.dialect.name == "postgresql":
        day: sa.ColumnElement[Any] = sa.func.to_char(
            sa.func.timezone("UTC", c.created_at), "YYYY-MM-DD"
        )
    else:
        day = sa.func.substr(sa.type_coerce(c.created_at, sa.String), 1, 10)
    priced = sa.and_(c.cost_usd.is_not(None), c.prompt_tokens.is_not(None))
    zero = sa.literal(0)

    def when_priced(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((priced, value), else_=zero)), zero)

    cached = sa.func.coalesce(c.cached_tokens, zero)
    written = sa.func.coalesce(c.cache_write_tokens, zero)
    query = sa.select(
        route.label("route"),
        day.label("day"),
        kind.label("kind"),
        sa.func.count().label("calls"),
        sa.func.sum(sa.case((priced, zero), else_=sa.literal(1))).label("unpriced"),
        when_priced(c.prompt_tokens - cached - written).label("input_tokens"),
        when_priced(cached).label("cached_tokens"),
        when_priced(written).label("cache_write_tokens"),
        when_priced(sa.func.coalesce(c.completion_tokens, zero)).label("completion_tokens"),
        sa.func.coalesce(
            sa.func.sum(sa.case((priced, c.cost_usd), else_=sa.literal(0.0))), sa.literal(0.0)
        ).label("cost_usd"),
    ).where(sa.or_(marked, answered))
    if since is not None:
        query = query.where(c.created_at >= since)
    if until is not None:
        query = query.where(c.created_at < until)
    query = query.group_by(route, day, kind).order_by(route, day, kind)
    async with engine.connect() as connection:
        result = await connection.execute(query)
        return [
            UsageSums(
                str(r.route),
                str(r.day),
                str(r.kind),
                int(r.calls),
                int(r.unpriced),
                int(r.input_tokens),
                int(r.cached_tokens),
                int(r.cache_write_tokens),
                int(r.completion_tokens),
                float(r.cost_usd),
            )
            for r in result
        ]
