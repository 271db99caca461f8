"""Per-key rate limits (requests and tokens per minute) and spend budgets (USD per day/month).

Two backends with one behaviour: ``LocalLimiter`` keeps the windows in this process (the
default, and what holds when no Redis is configured); ``RedisLimiter`` keeps them in Redis so
every replica shares them, with one atomic script (one round trip) per admitted call. Requests
are counted in an exact sliding window of 60 s; tokens in one-second buckets over the last 60 s,
added after the call from the real usage; spend per UTC day and month, added after the call.
A call is admitted while the key is under each limit, so the last admitted call may take the
tokens or the spend past it; the next one is refused.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger("gateway.limits")

Reason = Literal["rpm", "tpm", "daily_budget", "monthly_budget"]
WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.daily_usd, self.monthly_usd))


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: Reason | None = None
    retry_after: float = 0.0
    """Seconds until a refused call could be admitted."""
    remaining_requests: int | None = None
    used_tokens: int | None = None


ADMITTED = Verdict(True)


class Limiter(Protocol):
    async def admit(self, key_id: str, limits: Limits) -> Verdict: ...

    async def record(self, key_id: str, limits: Limits, tokens: int, cost: float | None) -> None:
        """Count a finished call's tokens and spend (off the hot path)."""
        ...

    async def flush(self) -> None:
        """Send what ``record`` holds back, if anything (at shutdown; tests)."""
        ...


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def _month(now: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(now))


def _until_next_day(now: float) -> float:
    return 86400.0 - (now % 86400.0)


def _until_next_month(now: float) -> float:
    tm = time.gmtime(now)
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return max(1.0, calendar.timegm((year, month, 1, 0, 0, 0)) - now)


class LocalLimiter:
    """The limits of one process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, dict[int, int]] = {}
        self._spend: dict[tuple[str, str], float] = {}

    async def admit(self, key_id: str, limits: Limits) -> Verdict:
        return self.admit_now(key_id, limits)

    def admit_now(self, key_id: str, limits: Limits) -> Verdict:
        now = self._clock()
        day, month = (key_id, "d" + _day(now)), (key_id, "m" + _month(now))
        if limits.daily_usd is not None and self._spend.get(day, 0.0) >= limits.daily_usd:
            return Verdict(False, "daily_budget", _until_next_day(now))
        if limits.monthly_usd is not None and self._spend.get(month, 0.0) >= limits.monthly_usd:
            return Verdict(False, "monthly_budget", _until_next_month(now))
        used: int | None = None
        if limits.tpm is not None:
            buckets = self._tokens.get(key_id, {})
            cutoff = int(now) - 59
            for second in [s for s in buckets if s < cutoff]:
                del buckets[second]
            used = sum(buckets.values())
            if used >= limits.tpm:
                oldest = min(buckets) if buckets else int(now)
                return Verdict(
                    False, "tpm", min(WINDOW_S, max(1.0, oldest + WINDOW_S - now)), used_tokens=used
                )
        remaining: int | None = None
        if limits.rpm is not None:
            window = self._requests.setdefault(key_id, deque())
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= limits.rpm:
                retry = window[0] + WINDOW_S - now
                return Verdict(False, "rpm", min(WINDOW_S, max(0.001, retry)), 0, used)
            window.append(now)
            remaining = limits.rpm - len(window)
        return Verdict(True, None, 0.0, remaining, used)

    async def flush(self) -> None:
        pass

    async def record(self, key_id: str, limits: Limits, tokens: int, cost: float | None) -> None:
        now = self._clock()
        if limits.tpm is not None and tokens > 0:
            buckets = self._tokens.setdefault(key_id, {})
            buckets[int(now)] = buckets.get(int(now), 0) + tokens
        if cost and (limits.daily_usd is not None or limits.monthly_usd is not None):
            for period in ((key_id, "d" + _day(now)), (key_id, "m" + _month(now))):
                self._spend[period] = self._spend.get(period, 0.0) + cost


# KEYS: requests zset, tokens hash, day spend, month spend.
# ARGV: now (ms), rpm, tpm, daily budget, monthly budget (-1: none), member for the zset.
_ADMIT = """
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local day_budget, month_budget = tonumber(ARGV[4]), tonumber(ARGV[5])
if day_budget >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= day_budget then
  return {'daily_budget', '0', '0'}
end
if month_budget >= 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= month_budget then
  return {'monthly_budget', '0', '0'}
end
local used = -1
if tpm >= 0 then
  used = 0
  local cutoff = math.floor(now / 1000) - 59
  local oldest = -1
  local fields = redis.call('HGETALL', KEYS[2])
  for i = 1, #fields, 2 do
    local second = tonumber(fields[i])
    if second < cutoff then
      redis.call('HDEL', KEYS[2], fields[i])
    else
      used = used + tonumber(fields[i + 1])
      if oldest < 0 or second < oldest then oldest = second end
    end
  end
  if used >= tpm then return {'tpm', tostring(used), tostring(oldest)} end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  local count = redis.call('ZCARD', KEYS[1])
  if count >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', tostring(used), first[2]}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], 61000)
  return {'ok', tostring(used), tostring(rpm - count - 1)}
end
return {'ok', tostring(used), '-1'}
"""

# KEYS: tokens hash, day spend, month spend. ARGV: second, tokens, cost.
_RECORD = """
local tokens, cost = tonumber(ARGV[2]), tonumber(ARGV[3])
if tokens > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], tokens)
  redis.call('EXPIRE', KEYS[1], 120)
end
if cost > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], 172800)
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[3])
  redis.call('EXPIRE', KEYS[3], 3024000)
end
return 1
"""


class RedisUnavailable(Exception):
    pass


class RedisLimiter:
    """Limits shared by every replica through Redis; one script call per admitted call.

    When Redis cannot be reached, ``fail_open`` admits the call (counted in ``failures`` and
    logged at most every 10 s) and the alternative refuses it; either way Redis is not asked
    again for ``retry_s`` seconds, so a dead Redis costs the calls nothing, and it is used again
    as soon as it answers: no restart needed.
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
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._admit_script = client.register_script(_ADMIT)
        self._record_script = client.register_script(_RECORD)
        self.fail_open = fail_open
        self._retry_s = retry_s
        self._clock = clock
        self._down_until = 0.0
        self._last_log = 0.0
        self.failures = 0
        self._sequence = 0
        self._flush_s = flush_s
        self._pending: dict[tuple[str, int, str, str], tuple[int, float]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def _keys(self, key_id: str, now: float) -> list[str]:
        base = f"{self._prefix}:limits:{{{key_id}}}"  # one hash slot per key (Redis Cluster)
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:d:{_day(now)}", f"{base}:m:{_month(now)}"]

    def _unavailable(self, exc: BaseException | None) -> Verdict:
        self.failures += 1
        now = time.monotonic()
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
        if time.monotonic() < self._down_until:
            return self._unavailable(None)
        now = self._clock()
        self._sequence += 1
        member = f"{now:.6f}:{id(self)}:{self._sequence}"
        args = [
            int(now * 1000),
            -1 if limits.rpm is None else limits.rpm,
            -1 if limits.tpm is None else limits.tpm,
            -1 if limits.daily_usd is None else limits.daily_usd,
            -1 if limits.monthly_usd is None else limits.monthly_usd,
            member,
        ]
        try:
            result = await self._admit_script(keys=self._keys(key_id, now), args=args)
        except Exception as exc:  # connection refused, timeout, Redis restarting
            return self._unavailable(exc)
        self._down_until = 0.0
        status, used_text, extra = (_text(v) for v in result)
        used = int(float(used_text)) if float(used_text) >= 0 else None
        if status == "ok":
            remaining = int(extra) if int(extra) >= 0 else None
            return Verdict(True, None, 0.0, remaining, used)
        if status == "rpm":
            retry = float(extra) / 1000.0 + WINDOW_S - now
            return Verdict(False, "rpm", min(WINDOW_S, max(0.001, retry)), 0, used)
        if status == "tpm":
            return Verdict(
                False, "tpm", min(WINDOW_S, max(1.0, float(extra) + WINDOW_S - now)), None, used
            )
        if status == "daily_budget":
            return Verdict(False, "daily_budget", _until_next_day(now))
        return Verdict(False, "monthly_budget", _until_next_month(now))

    async def record(self, key_id: str, limits: Limits, tokens: int, cost: float | None) -> None:
        """Counted here, sent to Redis with the others every ``flush_s`` in one pipeline: a
        call costs no round trip for this, and the windows lag by at most ``flush_s``."""
        now = self._clock()
        tokens = max(0, tokens) if limits.tpm is not None else 0
        spend = float(cost) if cost and (limits.daily_usd or limits.monthly_usd) else 0.0
        if not tokens and not spend:
            return
        slot = (key_id, int(now), _day(now), _month(now))
        held = self._pending.get(slot)
        self._pending[slot] = (
            (tokens, spend) if held is None else (held[0] + tokens, held[1] + spend)
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_s)
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending or time.monotonic() < self._down_until:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (key_id, second, day, month), (tokens, spend) in pending.items():
                    base = f"{self._prefix}:limits:{{{key_id}}}"
                    keys = [f"{base}:tpm", f"{base}:d:{day}", f"{base}:m:{month}"]
                    await self._record_script(
                        keys=keys, args=[second, tokens, repr(spend) if spend else "0"], client=pipe
                    )
                await pipe.execute()
        except Exception as exc:
            self._unavailable(exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
