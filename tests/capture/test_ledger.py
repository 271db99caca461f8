"""The savings ledger's sums on known rows: the SQL query and the pure function agree, on both
backends, and price to the figures worked out by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import pytest

from autopilot.ledger import ledger, totals
from capture.engine import create_engine
from capture.ledger import (
    COUNTERFACTUAL,
    JUDGE,
    PURPOSE_TAG,
    ROLLOUT_TAG,
    sums_from_rows,
    usage_sums,
)
from capture.pricing import Price
from capture.schema import calls

STUDENTS = {"support": ["student"]}
INCUMBENT = {"support": Price(2.0, 0.5, 8.0)}  # USD per 1M: input, cached input, output
DAY1 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 12, 2, 23, 59, 59, tzinfo=dt.UTC)
_ids = itertools.count()


def row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"call{next(_ids):04d}",
        "created_at": DAY1,
        "endpoint": "chat",
        "route": "support",
        "variant": "student",
        "status": 200,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": 0.0,
        "total_ms": 10.0,
        "overhead_ms": 1.0,
        "tags": {},
        "stream": False,
        "shadow_of": None,
        "cache_hit": False,
    }
    base.update(kw)
    return base


ROWS = [
    row(prompt_tokens=1000, cached_tokens=200, completion_tokens=500, cost_usd=0.001),
    row(prompt_tokens=2000, completion_tokens=1000, cost_usd=0.002, cached_tokens=None),
    row(prompt_tokens=100, cost_usd=None),  # the student's price unknown: unpriced
    row(status=500, prompt_tokens=None, cost_usd=None),  # failed: not answered
    row(variant="teacher", prompt_tokens=1000, cost_usd=0.01),  # the incumbent's own call
    row(shadow_of="call0000", prompt_tokens=100, cost_usd=0.0005),  # a shadow copy
    row(
        route="judge",
        variant="big",
        prompt_tokens=300,
        cost_usd=0.003,
        tags={PURPOSE_TAG: JUDGE, ROLLOUT_TAG: "support"},
    ),
    row(variant="teacher", prompt_tokens=10, cost_usd=0.004, tags={PURPOSE_TAG: COUNTERFACTUAL}),
    row(prompt_tokens=10, cost_usd=0.5, tags={PURPOSE_TAG: "something else"}),  # not ours
    row(route="judge", cost_usd=0.7, tags={PURPOSE_TAG: JUDGE, ROLLOUT_TAG: "other"}),
    row(route="other", cost_usd=0.9, prompt_tokens=5),  # a route without students
    row(
        created_at=DAY2,
        prompt_tokens=500,
        cache_write_tokens=100,
        completion_tokens=50,
        cost_usd=0.0001,
        tags={"task": "faq"},
    ),
    row(
        created_at=dt.datetime(2026, 12, 3, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        prompt_tokens=10,
        completion_tokens=10,
        cost_usd=0.00001,
    ),
]


def test_the_pure_sums_price_to_the_figures_worked_out_by_hand() -> None:
    lines = ledger(sums_from_rows(ROWS, STUDENTS), INCUMBENT)
    assert [(x.route, x.day) for x in lines] == [
        ("support", "2026-12-01"),
        ("support", "2026-12-02"),
    ]
    one, two = lines
    assert (one.student_calls, one.unpriced_calls) == (3, 1)
    assert one.student_cost_usd == pytest.approx(0.003)
    # (800 x 2 + 200 x 0.5 + 500 x 8 + 2000 x 2 + 1000 x 8) / 1e6
    assert one.incumbent_cost_usd == pytest.approx(0.0177)
    assert one.gross_savings_usd == pytest.approx(0.0147)
    assert one.judge_cost_usd == pytest.approx(0.003)
    assert one.counterfactual_cost_usd == pytest.approx(0.004)
    assert one.shadow_cost_usd == pytest.approx(0.0005)
    assert one.net_savings_usd == pytest.approx(0.0147 - 0.0075)
    # cache writes at the input price (no cache-write rate); the +02:00 call is a 12-02 call
    assert two.student_calls == 2
    assert two.incumbent_cost_usd == pytest.approx((800 + 200 + 400 + 20 + 80) / 1e6)
    assert two.net_savings_usd == pytest.approx(0.0015 - 0.00011)
    total = totals(lines)["support"]
    assert total["net_savings_usd"] == pytest.approx(one.net_savings_usd + two.net_savings_usd)
    with pytest.raises(ValueError, match="no incumbent price for route 'support'"):
        ledger(sums_from_rows(ROWS, STUDENTS), {})


def test_the_sql_sums_equal_the_pure_ones(database_url: str) -> None:
    async def run() -> tuple[Any, Any, Any]:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(calls.insert(), ROWS)
            everything = await usage_sums(engine, STUDENTS)
            day2 = await usage_sums(engine, STUDENTS, since=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
            none = await usage_sums(engine, {})
            return everything, day2, none
        finally:
            await engine.dispose()

    everything, day2, none = asyncio.run(run())
    expected = sums_from_rows(ROWS, STUDENTS)
    assert [s.as_dict() | {"cost_usd": 0} for s in everything] == [
        s.as_dict() | {"cost_usd": 0} for s in expected
    ]
    assert [s.cost_usd for s in everything] == pytest.approx([s.cost_usd for s in expected])
    assert {s.kind for s in everything} == {"student", "shadow", JUDGE, COUNTERFACTUAL}
    assert [(s.day, s.kind) for s in day2] == [("2026-12-02", "student")]
    assert none == []
