"""Judging a rollout's pairs in the background: the incumbent's and the candidate's answers to
the same request, compared by deterministic checks and a pairwise LLM judge.

A pair is a call of the rollout's route and its copy (``calls.shadow_of``): in the shadow stage
the candidate answers a copy of an incumbent-answered call; once the candidate answers live
traffic, the incumbent answers a counterfactual copy of a candidate-answered call. Both sides
must have been answered (status 200).

`PairJudge.judge_pending` finds the pairs not judged yet and, for each:

1. runs `autopilot.checks.check_answer` on both sides (the chat view: the capture's
   ``normalized`` for calls in Anthropic's dialect; content-store parts put back first);
2. when exactly one side fails a check, that side loses and no judge is asked;
3. otherwise asks the judge route through ``client`` (the gateway's own routes; the calls are
   tagged ``gateway.purpose=judge`` and ``gateway.rollout=<route>``, so they are captured as
   judge calls, counted in the savings ledger and never exported as training data), with
   ``exporter.evaluate.judge``'s prompt (and the configured rubric added to its instructions):
   with ``both_orders``, twice with the answers swapped, a win only when both orders prefer the
   candidate, a loss only when both prefer the incumbent, a tie otherwise (position bias cancels
   out); without, once in an order drawn at random;
4. inserts one ``judgements`` row (verdict ``win``/``tie``/``loss`` from the candidate's side,
   or NULL when the judge gave no readable verdict; the judge calls' ids; each side's check
   failures; the slice of the live call's tags; why). The pair's unique constraint makes a
   repeat (another replica, a restart) a no-op.

``sample`` judges that share of the pairs, chosen by a hash of the live call's id (the same
pairs on every replica and after a restart). Pairs left out by the sample are remembered in
memory, and a watermark moves past every pair handled once it is ``SETTLE_S`` old, so a small
sample does not make each look reread the same pairs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from autopilot.checks import check_answer
from autopilot.controller import RolloutConfig, slice_name
from autopilot.evidence import chat_sides, not_judge
from capture.content import resolve_rows
from capture.ledger import FORCED_TAG, JUDGE, PURPOSE_TAG, ROLLOUT_TAG
from capture.schema import NAME_LENGTH, SLICE_LENGTH, calls, judgements

if TYPE_CHECKING:
    from exporter.examples import Message

JudgeClient = Callable[
    [dict[str, Any], Mapping[str, str]], Awaitable[tuple[dict[str, Any] | None, str | None]]
]
"""Posts a chat request (the judge's) through the gateway with these tags; the answer's JSON
(None when it failed) and the call's request id (None when there is none)."""

WIN, TIE, LOSS = "win", "tie", "loss"
CANDIDATE, INCUMBENT = "candidate", "incumbent"
SETTLE_S = 60.0
"""A pair's live call older than this has its copy written: the watermark may pass it."""
SKIPPED_MAX = 100_000
"""At most this many left-out pairs are remembered per route (then the oldest are forgotten:
they may be looked at again, and again left out)."""
PAGES_MAX = 10
"""Pages of ``limit`` pairs read per look, at most, to find ``limit`` pairs to judge."""

Key = tuple[dt.datetime, str, str]
"""A pair's place in the reading order: its live call's created_at and id, its copy's id."""


@dataclass(frozen=True)
class Pair:
    live: dict[str, Any]
    copy: dict[str, Any]
    incumbent: dict[str, Any]
    candidate: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    verdict: str | None
    judge_calls: list[str]
    checks: dict[str, list[str]]
    reason: str


def sampled(call_id: str, sample: float, seed: int | None) -> bool:
    """Whether the pair of this live call is in the sample (the same answer everywhere)."""
    if sample >= 1.0:
        return True
    if sample <= 0.0:
        return False
    digest = hashlib.sha256(f"{seed or 0}:{call_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < sample


def _judge_reason(payload: Any) -> str | None:
    try:
        reason = orjson.loads(payload["choices"][0]["message"]["content"]).get("reason")
    except (KeyError, IndexError, TypeError, AttributeError, orjson.JSONDecodeError):
        return None
    return reason if isinstance(reason, str) else None


class PairJudge:
    """Judges a rollout's pending pairs (see the module)."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: JudgeClient,
        *,
        judge_route: str,
        rubric: str | None = None,
        both_orders: bool = True,
        sample: float = 1.0,
        concurrency: int = 4,
        seed: int | None = None,
    ) -> None:
        if not judge_route:
            raise ValueError("a judge route is needed")
        if not 0.0 <= sample <= 1.0:
            raise ValueError("sample must lie in [0, 1]")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.engine = engine
        self.client = client
        self.judge_route = judge_route
        self.rubric = rubric.strip() if rubric and rubric.strip() else None
        self.both_orders = both_orders
        self.sample = sample
        self.concurrency = concurrency
        self.seed = seed
        self._rng = random.Random(seed)
        self._marks: dict[str, Key] = {}
        self._skipped: dict[str, dict[str, dt.datetime]] = {}

    # --- finding the pairs ----------------------------------------------------------------

    def _query(
        self, config: RolloutConfig, since: dt.datetime, after: Key | None, limit: int
    ) -> sa.Select[Any]:
        live, copy = calls.alias("live"), calls.alias("copy")
        j = judgements.c
        inc, cand = config.incumbent[:NAME_LENGTH], config.candidate[:NAME_LENGTH]
        judged = sa.exists().where(
            sa.or_(
                sa.and_(j.incumbent_call == live.c.id, j.candidate_call == copy.c.id),
                sa.and_(j.incumbent_call == copy.c.id, j.candidate_call == live.c.id),
            )
        )
        query = (
            sa.select(
                live.c.id.label("live_id"),
                live.c.created_at.label("live_at"),
                live.c.variant.label("live_variant"),
                copy.c.id.label("copy_id"),
            )
            .select_from(live.join(copy, copy.c.shadow_of == live.c.id))
            .where(
                live.c.route == config.route[:NAME_LENGTH],
                copy.c.route == config.route[:NAME_LENGTH],
                live.c.created_at >= since,
                live.c.status == 200,
                copy.c.status == 200,
                sa.or_(
                    sa.and_(live.c.variant == inc, copy.c.variant == cand),
                    sa.and_(live.c.variant == cand, copy.c.variant == inc),
                ),
                sa.func.coalesce(live.c.tags[PURPOSE_TAG].as_string(), "") != JUDGE,
                sa.func.coalesce(copy.c.tags[PURPOSE_TAG].as_string(), "") != JUDGE,
                live.c.tags[FORCED_TAG].as_string().is_(None),  # forced: not drawn, not evidence
                ~judged,
            )
            .order_by(live.c.created_at, live.c.id, copy.c.id)
            .limit(limit)
        )
        if after is not None:
            at, live_id, copy_id = after
            query = query.where(
                live.c.created_at >= at,
                sa.or_(
                    live.c.created_at > at,
                    live.c.id > live_id,
                    sa.and_(live.c.id == live_id, copy.c.id > copy_id),
                ),
            )
        return query

    async def _load(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        query = sa.select(
            calls.c.id,
            calls.c.endpoint,
            calls.c.dialect,
            calls.c.variant,
            calls.c.upstream_api,
            calls.c.request,
            calls.c.response,
            calls.c.normalized,
            calls.c.tags,
            calls.c.content_refs,
        ).where(calls.c.id.in_(ids), not_judge())
        async with self.engine.connect() as connection:
            rows = [dict(r) for r in (await connection.execute(query)).mappings()]
            await resolve_rows(connection, rows)
        return {str(r["id"]): r for r in rows}

    # --- judging --------------------------------------------------------------------------

    async def judge_pending(
        self, config: RolloutConfig, since: dt.datetime, limit: int = 200
    ) -> int:
        """Judge the pairs of ``config``'s rollout whose live call is from ``since`` on and
        that are not judged yet, at most ``limit``; how many were judged (rows inserted)."""
        if limit < 1:
            return 0
        now = dt.datetime.now(dt.UTC)
        route = config.route
        skipped = self._skipped.setdefault(route, {})
        mark = self._marks.get(route)
        after = mark if mark is not None and mark[0] >= since else None
        chosen: list[tuple[str, str, str]] = []  # live id, copy id, live variant
        handled: list[Key] = []  # the pairs looked at, in order
        for _ in range(PAGES_MAX):
            async with self.engine.connect() as connection:
                page = list(
                    (await connection.execute(self._query(config, since, after, limit))).mappings()
                )
            for row in page:
                if len(chosen) >= limit:
                    break
                handled.append((row["live_at"], str(row["live_id"]), str(row["copy_id"])))
                live_id = str(row["live_id"])
                if live_id in skipped:
                    continue
                if not sampled(live_id, self.sample, self.seed):
                    skipped[live_id] = row["live_at"]
                    continue
                chosen.append((live_id, str(row["copy_id"]), str(row["live_variant"])))
            if len(page) < limit or len(chosen) >= limit:
                break
            last = page[-1]
            after = (last["live_at"], str(last["live_id"]), str(last["copy_id"]))
        if not chosen:
            self._advance(route, handled, now)
            return 0
        rows = await self._load([i for pair in chosen for i in pair[:2]])
        gate = asyncio.Semaphore(self.concurrency)
        # the orders are drawn here, in the pairs' order, so a seed gives the same draws
        draws = [self._rng.random() < 0.5 for _ in chosen]

        async def one(live_id: str, copy_id: str, live_variant: str, draw: bool) -> int:
            live, copy = rows.get(live_id), rows.get(copy_id)
            if live is None or copy is None:  # pruned meanwhile
                return 0
            candidate_live = live_variant == config.candidate[:NAME_LENGTH]
            pair = Pair(
                live=live,
                copy=copy,
                incumbent=copy if candidate_live else live,
                candidate=live if candidate_live else copy,
            )
            async with gate:
                outcome = await self._judge(config, pair, draw)
            return await self._store(config, pair, outcome)

        results = await asyncio.gather(
            *(one(*pair, draw) for pair, draw in zip(chosen, draws, strict=True))
        )
        self._advance(route, handled, now)  # only once every chosen pair is stored
        return sum(results)

    def _advance(self, route: str, handled: list[Key], now: dt.datetime) -> None:
        """Move the route's watermark over the settled prefix of the pairs looked at, and
        forget left-out pairs behind it."""
        settled = now - dt.timedelta(seconds=SETTLE_S)
        mark = self._marks.get(route)
        for key in handled:
            if key[0] > settled:
                break
            mark = key
        if mark is not None:
            self._marks[route] = mark
            skipped = self._skipped[route]
            for live_id in [i for i, at in skipped.items() if at < mark[0]]:
                del skipped[live_id]
        skipped = self._skipped[route]
        while len(skipped) > SKIPPED_MAX:
            del skipped[next(iter(skipped))]

    async def _judge(self, config: RolloutConfig, pair: Pair, draw: bool) -> Outcome:
        inc_sides, cand_sides = chat_sides(pair.incumbent), chat_sides(pair.candidate)
        if inc_sides is None or cand_sides is None:
            missing = INCUMBENT if inc_sides is None else CANDIDATE
            return Outcome(None, [], {}, f"no chat view of the {missing}'s call")
        checks = {INCUMBENT: check_answer(*inc_sides), CANDIDATE: check_answer(*cand_sides)}
        if bool(checks[INCUMBENT]) != bool(checks[CANDIDATE]):
            loser = CANDIDATE if checks[CANDIDATE] else INCUMBENT
            verdict = LOSS if loser == CANDIDATE else WIN
            why = f"the {loser} failed checks ({', '.join(checks[loser])}); the judge was not asked"
            return Outcome(verdict, [], checks, why)
        # Here, not at the top: the exporter (httpx with it) only once there is a pair to judge.
        from exporter.examples import Dropped, answer_of, clean_message

        try:
            prompt = [clean_message(m) for m in inc_sides[0].get("messages") or ()]
            incumbent, candidate = answer_of(inc_sides[1]), answer_of(cand_sides[1])
        except Dropped as dropped:
            if checks[INCUMBENT]:  # both failed checks and cannot be shown to a judge
                return Outcome(TIE, [], checks, "both sides failed checks")
            return Outcome(None, [], checks, f"cannot show the pair to a judge: {dropped.reason}")
        if not prompt:
            return Outcome(None, [], checks, "the request has no messages")
        orders = [True, False] if self.both_orders else [draw]
        asked = await asyncio.gather(
            *(self._ask(config, prompt, candidate, incumbent, first) for first in orders)
        )
        ids = [request_id for _, request_id, _ in asked if request_id is not None]
        verdicts = [verdict for verdict, _, _ in asked]
        reasons = [reason for _, _, reason in asked if reason]
        said = "; ".join(reasons)
        if any(v is None for v in verdicts):
            return Outcome(None, ids, checks, "the judge gave no readable verdict")
        if all(v == CANDIDATE for v in verdicts):
            verdict = WIN
        elif all(v == INCUMBENT for v in verdicts):
            verdict = LOSS
        else:
            verdict = TIE
        order_note = "both orders" if len(orders) == 2 else "one order"
        return Outcome(verdict, ids, checks, f"judge ({order_note}): {said}".strip())

    async def _ask(
        self,
        config: RolloutConfig,
        prompt: list[Message],
        candidate: Message,
        incumbent: Message,
        candidate_first: bool,
    ) -> tuple[str | None, str | None, str | None]:
        """One judge call: which side it prefers (candidate, incumbent, tie or None), the
        call's id and the judge's reason."""
        from exporter.evaluate.judge import INSTRUCTIONS, judge_request, read_verdict

        first, second = (candidate, incumbent) if candidate_first else (incumbent, candidate)
        body = judge_request(prompt, first, second, self.judge_route)
        if self.rubric is not None:
            body["messages"][0]["content"] = f"{INSTRUCTIONS}\n\nRubric:\n{self.rubric}"
        tags = {PURPOSE_TAG: JUDGE, ROLLOUT_TAG: config.route}
        try:
            payload, request_id = await self.client(body, tags)
        except Exception as exc:  # the client's failure is a missing verdict, not a crash
            return None, None, f"judge call failed: {type(exc).__name__}"
        winner = read_verdict(payload) if payload is not None else None
        if winner is None:
            return None, request_id, None
        reason = _judge_reason(payload)
        if winner == "tie":
            return TIE, request_id, reason
        side = CANDIDATE if (winner == "A") == candidate_first else INCUMBENT
        return side, request_id, reason

    async def _store(self, config: RolloutConfig, pair: Pair, outcome: Outcome) -> int:
        tags = pair.live.get("tags")
        tags = {str(k): str(v) for k, v in tags.items()} if isinstance(tags, Mapping) else {}
        row = {
            "created_at": dt.datetime.now(dt.UTC),
            "route": config.route[:NAME_LENGTH],
            "slice": slice_name(tags, config.slice_keys)[:SLICE_LENGTH],
            "incumbent_call": str(pair.incumbent["id"]),
            "candidate_call": str(pair.candidate["id"]),
            "incumbent": config.incumbent[:NAME_LENGTH],
            "candidate": config.candidate[:NAME_LENGTH],
            "verdict": outcome.verdict,
            "judge_calls": outcome.judge_calls,
            "checks": outcome.checks,
            "reason": outcome.reason,
        }
        async with self.engine.begin() as connection:
            insert = (
                postgresql.insert(judgements)
                if connection.dialect.name == "postgresql"
                else sqlite.insert(judgements)
            )
            statement = insert.values(**row).on_conflict_do_nothing(
                index_elements=["incumbent_call", "candidate_call"]
            )
            result = await connection.execute(statement)
        return 1 if result.rowcount == 1 else 0
