"""The Redis backend of the per-key limits (``gateway.limits``): windows and budgets shared by
every replica, one atomic Lua script per admitted call, and credits.

The admit script checks and counts in one round trip, sent over the lean pipelined connection
(``gateway.resp``); tokens and spend are added after the call, batched every 100 ms. Credits
take even that round trip off a busy key's calls: see the comments above ``ADMIT``
(gateway/redisscripts.py) and ``_Credits``. When Redis cannot be reached the configured policy
(open or closed) applies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from gateway.limits import (
    ADMITTED,
    WINDOW_S,
    Admission,
    Decided,
    LimiterOutcome,
    Limits,
    Periods,
    Verdict,
    until_next_day,
    until_next_month,
)
from gateway.redisscripts import ADMIT, RECORD, unknown
from gateway.resp import Arg, PipelinedRedis, ReplyError

log = logging.getLogger("gateway.limits")


HOT_CALLS = 10
"""Calls of one key on this replica in each of the two previous seconds from which it asks for
credits (two seconds running: a short burst never gets credits it might leave unused)."""
CREDIT_LEASE_S = 1.0
"""How long credits may be used; what is left then is given back."""
MAX_CREDITS = 256
CREDITS_PER_COMMAND = 128
"""Credits re-timed or given back per ZADD/ZREM of a flush."""


@dataclass(slots=True)
class _Credits:
    """A key's admissions granted ahead to this replica, and its recent call rate."""

    limits: Limits
    zset: str
    members: list[str] = field(default_factory=list)
    expires: float = 0.0
    left: int | None = None
    """Requests left in the window when the credits were granted (beyond them)."""
    used: int | None = None
    refilling: bool = False
    second: int = 0
    calls: int = 0
    last_calls: int = 0
    calls_before: int = 0
    """Calls in the current second, the previous one and the one before."""

    def count_call(self, mono: float) -> None:
        second = int(mono)
        if second != self.second:
            if second == self.second + 1:
                self.calls_before, self.last_calls = self.last_calls, self.calls
            elif second == self.second + 2:
                self.calls_before, self.last_calls = self.calls, 0
            else:
                self.calls_before = self.last_calls = 0
            self.second, self.calls = second, 0
        self.calls += 1

    def wanted(self) -> int:
        """Credits to ask for: about a quarter second of this key's calls, 0 when not busy."""
        if min(self.last_calls, self.calls_before) < HOT_CALLS or self.refilling:
            return 0
        want = min(MAX_CREDITS, max(2, self.last_calls // 4))
        return want if len(self.members) <= want // 2 else 0


class RedisLimiter:
    """Limits shared by every replica through Redis; one script call per call at most.

    A call waits for one script round trip, unless its key has been busy on this replica for two
    seconds running: then the replica holds credits granted ahead by the same script
    (admissions counted in Redis like calls, see ``ADMIT``) and admits from them at once,
    asking for more in the background before they run out. Credits are only granted while the
    key is far from its limits, last a second, are re-timed to the moment each is used, and are
    given back when unused; near a limit every call asks Redis, so the sum of admitted calls
    never exceeds it.

    When Redis cannot be reached, ``fail_open`` admits the call (counted in ``failures`` and
    logged at most every 10 s) and the alternative refuses it; either way Redis is not asked
    again for ``retry_s`` seconds, so a dead Redis costs the calls nothing, and it is used again
    as soon as it answers: no restart needed. A call admitted so has no known figures (its
    verdict leaves them None). ``on_error`` hears of each failure with what became of it
    (``LimiterOutcome``), for the metrics.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "gateway",
        fail_open: bool = True,
        retry_s: float = 1.0,
        flush_s: float = 0.1,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        connection: PipelinedRedis | None = None,
        credits: bool = True,
        on_error: Callable[[LimiterOutcome], None] | None = None,
    ) -> None:
        self._redis = client
        # The admit and the credits' batched updates go over a lean pipelined connection to the
        # same server (gateway/resp.py); the tokens' and spend's batched scripts through redis-py.
        self._connection = connection or PipelinedRedis.like(client)
        self._prefix = prefix
        self.fail_open = fail_open
        self._retry_s = retry_s
        self._clock = clock
        self._monotonic = monotonic
        self._down_until = 0.0
        self._last_log = 0.0
        self.failures = 0
        self._on_error = on_error
        self._member_prefix = f"{uuid.uuid4().hex[:12]}:"
        self._sequence = 0
        self._flush_s = flush_s
        self._pending: dict[tuple[str, int, str, str], tuple[int, float]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._periods = Periods()
        self._bases: dict[str, str] = {}
        self._use_credits = credits
        self._credits: dict[str, _Credits] = {}
        self._used_credits: list[tuple[str, int, str]] = []
        """(zset, ms, member): credits used, re-timed in Redis at the next flush."""
        self._unused_credits: list[tuple[str, list[str]]] = []
        """(zset, members): credits given back at the next flush."""
        self._refills: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()
        """Keys for which this replica holds credits."""

    def _base(self, key_id: str) -> str:
        base = self._bases.get(key_id)
        if base is None:
            if len(self._bases) > 100_000:
                self._bases.clear()
            # one hash slot per key (Redis Cluster)
            base = self._bases[key_id] = f"{self._prefix}:limits:{{{key_id}}}"
        return base

    def _unavailable(
        self, exc: BaseException | None, outcome: LimiterOutcome | None = None
    ) -> Verdict:
        """The verdict without Redis (``fail_open``), and the failure counted and reported."""
        self.failures += 1
        if outcome is None:
            outcome = "admitted" if self.fail_open else "refused"
        if self._on_error is not None:
            try:
                self._on_error(outcome)
            except Exception:  # the metrics must never fail a call
                log.debug("the limiter's error hook failed", exc_info=True)
        now = self._monotonic()
        if exc is not None:
            self._down_until = now + self._retry_s
        if now - self._last_log >= 10.0:
            self._last_log = now
            policy = "admitting calls (fail open)" if self.fail_open else "refusing calls"
            log.warning(
                "Redis is unreachable for rate limits (%s): %s", exc or "backing off", policy
            )
        if self.fail_open:
            return ADMITTED
        return Verdict(False, None, self._retry_s)

    async def admit(self, key_id: str, limits: Limits) -> Verdict:
        return await self.begin(key_id, limits)

    def begin(self, key_id: str, limits: Limits) -> Admission:
        if self._use_credits:
            credit = self._take_credit(key_id, limits)
            if credit is not None:
                return credit
        if self._down_until and self._monotonic() < self._down_until:
            return Decided(self._unavailable(None))
        now = self._clock()
        args = self._args(key_id, limits, now, 1, 0)
        return _RedisAdmission(self, self._send(args), args, now)

    def _send(self, args: tuple[str | int | float, ...]) -> asyncio.Future[Any]:
        """The admit script, written now; its reply to come."""
        reply = self._connection.send("EVALSHA", ADMIT.sha, *args)
        if reply is None:  # not connected yet: the task connects and sends
            reply = asyncio.ensure_future(self._connection.execute("EVALSHA", ADMIT.sha, *args))
        return reply

    async def _answer(self, reply: asyncio.Future[Any], args: tuple[Any, ...]) -> Any:
        """The script's answer; when Redis has forgotten the script (a restart), it is sent
        again whole, which caches it."""
        try:
            result = await reply
        except ReplyError as exc:  # raised by execute; send returns it
            result = exc
        if isinstance(result, ReplyError):
            if not unknown(result):
                raise result
            result = await self._connection.execute("EVAL", ADMIT.source, *args)
        return result

    def _args(
        self, key_id: str, limits: Limits, now: float, calls: int, want: int
    ) -> tuple[str | int | float, ...]:
        day, month = self._periods.names(now)
        base = self._base(key_id)
        self._sequence += 1
        return (
            4,
            base + ":rpm",
            base + ":tpm",
            f"{base}:d:{day}",
            f"{base}:m:{month}",
            int(now * 1000),
            -1 if limits.rpm is None else limits.rpm,
            -1 if limits.tpm is None else limits.tpm,
            -1 if limits.daily_usd is None else limits.daily_usd,
            -1 if limits.monthly_usd is None else limits.monthly_usd,
            self._member_prefix + str(self._sequence),
            calls,
            want,
        )

    def _take_credit(self, key_id: str, limits: Limits) -> Decided | None:
        """Admit from this replica's credits for the key, if it holds any; ask for more."""
        mono = self._monotonic()
        credits = self._credits.get(key_id)
        if credits is None or (credits.limits is not limits and credits.limits != limits):
            if credits is not None:
                self._give_back(credits)
            elif len(self._credits) > 100_000:
                self._forget_idle(mono)
            credits = self._credits[key_id] = _Credits(limits, self._base(key_id) + ":rpm")
        credits.count_call(mono)
        verdict: Decided | None = None
        if credits.members:
            if mono < credits.expires:
                member = credits.members.pop()
                if limits.rpm is not None:
                    self._used_credits.append((credits.zset, int(self._clock() * 1000), member))
                    self._flush_later()
                left = None if credits.left is None else credits.left + len(credits.members)
                verdict = Decided(Verdict(True, None, 0.0, left, credits.used))
            else:
                self._give_back(credits)
        want = credits.wanted()
        if want and not (self._down_until and mono < self._down_until):
            credits.refilling = True
            task = asyncio.get_running_loop().create_task(self._refill(key_id, credits, want))
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)
        return verdict

    async def _refill(self, key_id: str, credits: _Credits, want: int) -> None:
        try:
            now = self._clock()
            args = self._args(key_id, credits.limits, now, 0, want)
            result = await self._answer(self._send(args), args)
            status, used_text, left_text, granted_text = (_text(v) for v in result)
            granted = int(granted_text)
            if status != "ok" or not granted:
                return
            if self._credits.get(key_id) is not credits:  # the key changed meanwhile
                if credits.limits.rpm is not None:
                    self._unused_credits.append((credits.zset, _members(args, granted)))
                    self._flush_later()
                return
            # What is left of the last credits goes back: no credit is ever older than a lease.
            self._give_back(credits)
            credits.members = _members(args, granted) if credits.limits.rpm else [""] * granted
            self._held.add(key_id)
            credits.expires = self._monotonic() + CREDIT_LEASE_S
            credits.left = int(left_text) if left_text[0] != "-" else None
            credits.used = int(float(used_text)) if used_text[0] != "-" else None
            self._flush_later()  # to give back what is left when they expire
        except Exception:  # Redis unreachable: the calls find out for themselves
            log.debug("credits for a key could not be fetched", exc_info=True)
        finally:
            credits.refilling = False

    def _give_back(self, credits: _Credits) -> None:
        if credits.members:
            if credits.limits.rpm is not None:
                self._unused_credits.append((credits.zset, credits.members))
                self._flush_later()
            credits.members = []

    def _forget_idle(self, mono: float) -> None:
        for key_id, credits in list(self._credits.items()):
            if not credits.members or mono >= credits.expires:
                self._give_back(credits)
                del self._credits[key_id]

    async def _settle(
        self, reply: asyncio.Future[Any], args: tuple[Any, ...], now: float
    ) -> Verdict:
        try:
            result = await self._answer(reply, args)
        except Exception as exc:  # connection refused, timeout, Redis restarting
            return self._unavailable(exc)
        self._down_until = 0.0
        status, used_text, extra, _ = (_text(v) for v in result)
        used = int(float(used_text)) if used_text[0] != "-" else None
        if status == "ok":
            return Verdict(True, None, 0.0, int(extra) if extra[0] != "-" else None, used)
        if status == "rpm":
            retry = float(extra) / 1000.0 + WINDOW_S - now
            return Verdict(False, "rpm", min(WINDOW_S, max(0.001, retry)), 0, used)
        if status == "tpm":
            return Verdict(
                False, "tpm", min(WINDOW_S, max(1.0, float(extra) + WINDOW_S - now)), None, used
            )
        if status == "daily_budget":
            return Verdict(False, "daily_budget", until_next_day(now))
        return Verdict(False, "monthly_budget", until_next_month(now))

    def record(self, key_id: str, limits: Limits, tokens: int, cost: float | None) -> None:
        """Counted here, sent to Redis with the others every ``flush_s`` in one pipeline: a
        call costs no round trip for this, and the windows lag by at most ``flush_s`` (needs
        the running loop, for the flush's task)."""
        now = self._clock()
        tokens = max(0, tokens) if limits.tpm is not None else 0
        spend = float(cost) if cost and (limits.daily_usd or limits.monthly_usd) else 0.0
        if not tokens and not spend:
            return
        slot = (key_id, int(now), *self._periods.names(now))
        held = self._pending.get(slot)
        self._pending[slot] = (
            (tokens, spend) if held is None else (held[0] + tokens, held[1] + spend)
        )
        self._flush_later()

    def _flush_later(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_s)
        await self.flush()
        if self._pending or self._used_credits or self._unused_credits or self._held:
            self._flusher = None
            self._flush_later()  # more came meanwhile, or credits to give back when they expire

    async def flush(self) -> None:
        mono = self._monotonic()
        for key_id in list(self._held):
            credits = self._credits.get(key_id)
            if credits is None or not credits.members:
                self._held.discard(key_id)
            elif mono >= credits.expires:
                self._give_back(credits)
                self._held.discard(key_id)
        pending, self._pending = self._pending, {}
        used, self._used_credits = self._used_credits, []
        unused, self._unused_credits = self._unused_credits, []
        if not (pending or used or unused):
            return
        if mono < self._down_until:
            if pending:  # tokens and spend lost while Redis is down
                self._unavailable(None, "unrecorded")
            return
        try:
            if pending:
                await self._record(pending)
            if used or unused:
                commands = _credit_commands(used, unused)
                replies = await asyncio.gather(
                    *(self._connection.execute(*args) for args in commands), return_exceptions=True
                )
                for reply in replies:
                    if isinstance(reply, BaseException):
                        raise reply
        except Exception as exc:
            self._unavailable(exc, "unrecorded")

    async def _record(self, pending: dict[tuple[str, int, str, str], tuple[int, float]]) -> None:
        """The record script once per key and second, over the lean connection (pipelined on
        its socket, packed by hiredis: through redis-py's pipeline a flush held the loop for
        ~0.4 ms of CPU); a script Redis has forgotten (a restart) is sent again whole."""
        commands: list[tuple[Arg, ...]] = []
        for (key_id, second, day, month), (tokens, spend) in pending.items():
            base = self._base(key_id)
            commands.append(
                (
                    3,
                    f"{base}:tpm",
                    f"{base}:d:{day}",
                    f"{base}:m:{month}",
                    second,
                    tokens,
                    repr(spend) if spend else "0",
                )
            )
        connection = self._connection
        replies = await asyncio.gather(
            *(connection.execute("EVALSHA", RECORD.sha, *args) for args in commands),
            return_exceptions=True,
        )
        for args, reply in zip(commands, replies, strict=True):
            if unknown(reply):
                await connection.execute("EVAL", RECORD.source, *args)
            elif isinstance(reply, BaseException):
                raise reply

    async def close(self) -> None:
        """Give back every credit held (at shutdown) and send what is pending."""
        for credits in self._credits.values():
            self._give_back(credits)
        await self.flush()
        await self._connection.aclose()


def _credit_commands(
    used: list[tuple[str, int, str]], unused: list[tuple[str, list[str]]]
) -> list[tuple[Arg, ...]]:
    """ZADDs (credits used, re-timed to their calls) and ZREMs (credits given back) per key, of
    at most ``CREDITS_PER_COMMAND`` credits each, for the lean connection: at c=50 a flush
    carries a few hundred credits, which as a command each through redis-py's pipeline held the
    loop for 2-15 ms, and as one command per key up to 0.6 ms (each command is packed in its own
    step of the loop)."""
    retimed: dict[str, dict[str, int]] = {}
    for zset, ms, member in used:
        retimed.setdefault(zset, {})[member] = ms
    returned: dict[str, list[str]] = {}
    for zset, members in unused:
        returned.setdefault(zset, []).extend(members)
    commands: list[tuple[Arg, ...]] = []
    for zset, scores in retimed.items():
        pairs = list(scores.items())
        for start in range(0, len(pairs), CREDITS_PER_COMMAND):
            args: list[Arg] = ["ZADD", zset]
            for member, ms in pairs[start : start + CREDITS_PER_COMMAND]:
                args += (ms, member)
            commands.append(tuple(args))
    for zset, members in returned.items():
        for start in range(0, len(members), CREDITS_PER_COMMAND):
            commands.append(("ZREM", zset, *members[start : start + CREDITS_PER_COMMAND]))
    return commands


def _members(args: tuple[Any, ...], granted: int) -> list[str]:
    """The credits' members the script added (see ``ADMIT``)."""
    return [f"{args[10]}:{i}" for i in range(1, granted + 1)]


class _RedisAdmission:
    __slots__ = ("_args", "_limiter", "_now", "_reply")

    def __init__(
        self, limiter: RedisLimiter, reply: asyncio.Future[Any], args: tuple[Any, ...], now: float
    ) -> None:
        self._limiter, self._reply, self._args, self._now = limiter, reply, args, now

    def __await__(self) -> Generator[Any, None, Verdict]:
        return self._limiter._settle(self._reply, self._args, self._now).__await__()

    def discard(self) -> None:
        # The reply is still read (and a failure retrieved), so nothing is left dangling.
        self._reply.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
