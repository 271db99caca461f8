"""The evidence of one rollout read from the capture store, in looks that never count twice.

`EvidenceReader.read(cursor, now)` returns what arrived since ``cursor`` as an
`autopilot.controller.Evidence`, and the cursor to pass next time:

- per slice (``slice_name`` over the calls' tags and the rollout's ``slice_keys``), the judged
  pairs' wins, ties and losses (the ``judgements`` table, which `autopilot.judging` fills);
- per arm (the calls of ``config.route`` answered by ``config.candidate`` or
  ``config.incumbent``, live calls and shadow or counterfactual copies alike, never a judge's
  calls): calls; errors (status >= 400, or a status-200 answer that fails
  `autopilot.checks.check_answer`); the sum of the known costs; latencies (``total_ms``) and,
  for streams, times to first token of the answered calls (status < 400); app feedback
  (``/v1/feedback``, joined to its call) as stored, on the gates' ``feedback_range``, scores
  outside it (or not finite) left out, since the controller refuses them.

The capture writer inserts in batches, so a row can land with a ``created_at`` older than rows
already read. Each of the three tables is read in keyset order on ``(created_at, id)`` and only
up to ``now - lag_s``: a row that lands within ``lag_s`` of its ``created_at`` is read once, in
the look after it landed. At most ``page`` rows of each table are read per look; a backlog
takes several looks (the cursor says where each table stopped).

The cursor is plain JSON: ``{"calls": [iso, id] | None, "feedback": [iso, id] | None,
"judgements": [iso, id] | None}``. ``None`` (no cursor) starts at ``started`` (the reader's
keyword argument: the rollout's start) when given, and at the beginning of the store otherwise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from autopilot.checks import check_answer
from autopilot.controller import (
    DEFAULT_SLICE,
    ArmEvidence,
    Evidence,
    RolloutConfig,
    SliceEvidence,
    slice_name,
)
from capture.content import resolve_rows
from capture.ledger import FORCED_TAG, JUDGE, PURPOSE_TAG
from capture.schema import NAME_LENGTH, calls, feedback, judgements

Key = tuple[dt.datetime, str]

CHECKED_KEYS = ("response_format", "tools", "functions")
"""What of a request the checks read: only these are fetched (a prompt is most of a row)."""
CALL_COLUMNS = (
    calls.c.id,
    calls.c.created_at,
    calls.c.endpoint,
    calls.c.dialect,
    calls.c.variant,
    calls.c.upstream_api,
    *(calls.c.request[key].label(f"request.{key}") for key in CHECKED_KEYS),
    calls.c.response,
    *(calls.c.normalized["request"][key].label(f"view.{key}") for key in CHECKED_KEYS),
    calls.c.normalized["response"].label("view.response"),
    calls.c.normalized["error"].label("view.error"),
    (calls.c.normalized.is_(None)).label("view.none"),
    calls.c.status,
    calls.c.cost_usd,
    calls.c.total_ms,
    calls.c.ttft_ms,
    calls.c.stream,
    calls.c.tags,
    calls.c.content_refs,
)
CHAT_ENDPOINTS = ("chat", "messages")
"""Endpoints whose answers have a chat view that the checks read."""


YIELD_EVERY = 100
"""Rows checked between two yields to the event loop."""
CHUNK = 100
"""Calls fetched at a time from the page's one query (streamed), so that decoding them (done
on the event loop) never holds the gateway's calls up for long."""


def _checked_parts(row: dict[str, Any]) -> dict[str, Any]:
    """A row read with `CALL_COLUMNS` in the stored shape (``request``, ``normalized``),
    holding only what the checks read."""
    row["request"] = {
        key: value for key in CHECKED_KEYS if (value := row.pop(f"request.{key}")) is not None
    }
    view_request = {
        key: value for key in CHECKED_KEYS if (value := row.pop(f"view.{key}")) is not None
    }
    view = {
        "request": view_request if row.pop("view.request.kind") == "object" else None,
        "response": row.pop("view.response"),
    }
    error = row.pop("view.error")
    if error is not None:
        view["error"] = error
    row["normalized"] = None if row.pop("view.none") else view
    return row


def not_judge() -> sa.ColumnElement[bool]:
    """Calls that count as evidence: not made by a judge (``gateway.purpose`` absent or anything
    but ``judge``), and not forced to their variant by the client (``gateway.forced``)."""
    return sa.and_(
        sa.func.coalesce(calls.c.tags[PURPOSE_TAG].as_string(), "") != JUDGE,
        calls.c.tags[FORCED_TAG].as_string().is_(None),
    )


def _after(created_at: Any, key_text: Any, last: Key | None) -> sa.ColumnElement[bool]:
    """Rows after ``last`` in ``(created_at, id)`` order (``key_text``: the id as text that
    sorts as the id does)."""
    if last is None:
        return sa.true()
    at, last_id = last
    return sa.and_(created_at >= at, sa.or_(created_at > at, key_text > last_id))


def _padded(connection: AsyncConnection, column: Any) -> Any:
    """An integer id as zero-padded text, so text order is number order."""
    if connection.dialect.name == "sqlite":
        return sa.func.printf("%020d", column)
    return sa.func.lpad(sa.cast(column, sa.String), 20, "0")


def _key(value: Any) -> Key | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"not an evidence cursor position: {value!r}")
    at = dt.datetime.fromisoformat(str(value[0]))
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at, str(value[1])


def _dump(key: Key | None) -> list[str] | None:
    return None if key is None else [key[0].isoformat(), key[1]]


def _id_text(value: Any) -> str:
    """An id as the tiebreak compares it: text (integer ids zero-padded so they sort)."""
    return f"{value:020d}" if isinstance(value, int) else str(value)


@dataclass
class _Arm:
    calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)
    feedback: list[float] = field(default_factory=list)

    def frozen(self) -> ArmEvidence:
        return ArmEvidence(
            calls=self.calls,
            errors=self.errors,
            cost_usd=self.cost_usd,
            latencies_ms=tuple(self.latencies_ms),
            ttfts_ms=tuple(self.ttfts_ms),
            feedback=tuple(self.feedback),
        )


@dataclass
class _Slice:
    tags: dict[str, str]
    wins: int = 0
    ties: int = 0
    losses: int = 0
    candidate: _Arm = field(default_factory=_Arm)
    incumbent: _Arm = field(default_factory=_Arm)

    def frozen(self) -> SliceEvidence:
        return SliceEvidence(
            tags=dict(self.tags),
            wins=self.wins,
            ties=self.ties,
            losses=self.losses,
            candidate=self.candidate.frozen(),
            incumbent=self.incumbent.frozen(),
        )


def tags_of_slice(name: str, keys: Sequence[str]) -> dict[str, str]:
    """A slice's tags back from its name (``slice_name``'s inverse for values without
    ``,<next key>=`` in them)."""
    if not keys or name == DEFAULT_SLICE:
        return {}
    out: dict[str, str] = {}
    rest = name
    for i, key in enumerate(keys):
        prefix = f"{key}="
        rest = rest[len(prefix) :] if rest.startswith(prefix) else rest
        if i + 1 < len(keys):
            marker = f",{keys[i + 1]}="
            cut = rest.find(marker)
            value, rest = (rest, "") if cut < 0 else (rest[:cut], rest[cut + 1 :])
        else:
            value = rest
        out[key] = value
    return out


def chat_sides(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A stored call's chat request and answer (the normalised view for Anthropic's dialect),
    or None when it has none."""
    if row.get("endpoint") not in CHAT_ENDPOINTS:
        return None
    # Here, not at the top: the gateway imports this module at start, the exporter it need not.
    from exporter.examples import Dropped, chat_parts

    try:
        request, response = chat_parts(row)
    except Dropped:
        return None
    if not isinstance(request, dict) or not isinstance(response, dict):
        return None
    return request, response


class EvidenceReader:
    """Reads one rollout's evidence from the capture store (see the module)."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: RolloutConfig,
        *,
        lag_s: float = 2.0,
        page: int = 5000,
        started: dt.datetime | None = None,
    ) -> None:
        if lag_s < 0 or page < 1:
            raise ValueError("lag_s must be >= 0 and page >= 1")
        if started is not None and started.tzinfo is None:
            raise ValueError("started must be timezone-aware")
        self.engine = engine
        self.config = config
        self.lag = dt.timedelta(seconds=lag_s)
        self.page = page
        self.started = started

    def _start(self) -> Key | None:
        # "" sorts before every id: the first key at `started` is read
        return None if self.started is None else (self.started, "")

    async def read(
        self, cursor: dict[str, Any] | None, now: dt.datetime
    ) -> tuple[Evidence, dict[str, Any]]:
        """What arrived since ``cursor`` (up to ``now - lag_s``), and the next cursor."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        cursor = cursor or {}
        start = self._start()
        positions = {
            name: _key(cursor[name]) if name in cursor else start
            for name in ("calls", "feedback", "judgements")
        }
        until = now - self.lag
        slices: dict[str, _Slice] = {}
        async with self.engine.connect() as connection:
            positions["calls"] = await self._calls(connection, positions["calls"], until, slices)
            positions["feedback"] = await self._feedback(
                connection, positions["feedback"], until, slices
            )
            positions["judgements"] = await self._judgements(
                connection, positions["judgements"], until, slices
            )
        evidence = Evidence(slices=tuple(s.frozen() for s in slices.values()))
        return evidence, {name: _dump(key) for name, key in positions.items()}

    # --- the parts ------------------------------------------------------------------------

    def _slice(self, slices: dict[str, _Slice], tags: Any) -> _Slice:
        keys = self.config.slice_keys
        tags = tags if isinstance(tags, Mapping) else {}
        own = {k: str(tags.get(k, "")) for k in keys}
        name = slice_name(own, keys)
        if name not in slices:
            slices[name] = _Slice(own)
        return slices[name]

    def _arm(self, s: _Slice, variant: Any) -> _Arm | None:
        if variant == self.config.candidate[:NAME_LENGTH]:
            return s.candidate
        if variant == self.config.incumbent[:NAME_LENGTH]:
            return s.incumbent
        return None

    def _arms(self) -> sa.ColumnElement[bool]:
        c = self.config
        return sa.and_(
            calls.c.route == c.route[:NAME_LENGTH],
            calls.c.variant.in_((c.candidate[:NAME_LENGTH], c.incumbent[:NAME_LENGTH])),
        )

    async def _calls(
        self,
        connection: AsyncConnection,
        last: Key | None,
        until: dt.datetime,
        slices: dict[str, _Slice],
    ) -> Key | None:
        # whether the view's request is an object (not absent, not JSON null)
        kind = (
            sa.func.jsonb_typeof(calls.c.normalized["request"])
            if connection.dialect.name == "postgresql"
            else sa.func.json_type(calls.c.normalized, "$.request")
        )
        query = (
            sa.select(*CALL_COLUMNS, kind.label("view.request.kind"))
            .where(
                self._arms(),
                not_judge(),
                calls.c.created_at <= until,
                _after(calls.c.created_at, calls.c.id, last),
            )
            .order_by(calls.c.created_at, calls.c.id)
            .limit(self.page)
        )
        rows: list[dict[str, Any]] = []
        result = await connection.stream(query)
        async for part in result.mappings().partitions(CHUNK):
            rows += [_checked_parts(dict(r)) for r in part]
            await asyncio.sleep(0)  # decoding is done on the event loop: let calls through
        if not rows:
            return last
        await resolve_rows(connection, [r for r in rows if r["status"] == 200])
        for n, row in enumerate(rows):
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            self._count_call(slices, row)
        return rows[-1]["created_at"], str(rows[-1]["id"])

    def _count_call(self, slices: dict[str, _Slice], row: dict[str, Any]) -> None:
        arm = self._arm(self._slice(slices, row["tags"]), row["variant"])
        if arm is None:
            return
        arm.calls += 1
        status = int(row["status"])
        if row["cost_usd"] is not None and math.isfinite(row["cost_usd"]):
            arm.cost_usd += float(row["cost_usd"])
        if status >= 400:
            arm.errors += 1
            return
        if status == 200:
            sides = chat_sides(row)
            if sides is not None and check_answer(*sides):
                arm.errors += 1
        arm.latencies_ms.append(float(row["total_ms"]))
        if row["stream"] and row["ttft_ms"] is not None:
            arm.ttfts_ms.append(float(row["ttft_ms"]))

    async def _feedback(
        self,
        connection: AsyncConnection,
        last: Key | None,
        until: dt.datetime,
        slices: dict[str, _Slice],
    ) -> Key | None:
        f = feedback.c
        query = (
            sa.select(f.id, f.created_at, f.score, calls.c.variant, calls.c.tags)
            .select_from(feedback.join(calls, calls.c.id == f.request_id))
            .where(
                self._arms(),
                not_judge(),
                f.created_at <= until,
                _after(f.created_at, _padded(connection, f.id), last),
            )
            .order_by(f.created_at, f.id)
            .limit(self.page)
        )
        rows = list((await connection.execute(query)).mappings())
        if not rows:
            return last
        lo, hi = self.config.gates.feedback_range
        for row in rows:
            arm = self._arm(self._slice(slices, row["tags"]), row["variant"])
            score = row["score"]
            if arm is not None and score is not None and math.isfinite(score) and lo <= score <= hi:
                arm.feedback.append(float(score))
        return rows[-1]["created_at"], _id_text(int(rows[-1]["id"]))

    async def _judgements(
        self,
        connection: AsyncConnection,
        last: Key | None,
        until: dt.datetime,
        slices: dict[str, _Slice],
    ) -> Key | None:
        j = judgements.c
        c = self.config
        query = (
            sa.select(j.id, j.created_at, j.slice, j.verdict)
            .where(
                j.route == c.route[:NAME_LENGTH],
                j.candidate == c.candidate[:NAME_LENGTH],
                j.incumbent == c.incumbent[:NAME_LENGTH],
                j.created_at <= until,
                _after(j.created_at, _padded(connection, j.id), last),
            )
            .order_by(j.created_at, j.id)
            .limit(self.page)
        )
        rows = list((await connection.execute(query)).mappings())
        if not rows:
            return last
        for row in rows:
            tags = tags_of_slice(str(row["slice"]), c.slice_keys)
            s = self._slice(slices, tags)
            if row["verdict"] == "win":
                s.wins += 1
            elif row["verdict"] == "tie":
                s.ties += 1
            elif row["verdict"] == "loss":
                s.losses += 1
        return rows[-1]["created_at"], _id_text(int(rows[-1]["id"]))
