"""The Lua scripts the gateway runs in Redis, and how they are sent.

A ``Script`` goes by its sha1 (``EVALSHA``) over the lean pipelined connection
(``gateway.resp``), and by its text (``EVAL``) when Redis answers that it does not know it (a
restarted Redis, ``SCRIPT FLUSH``), which also makes Redis keep it again. Each script runs
atomically: what it reads and what it writes are one step for every replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from gateway.resp import Arg, PipelinedRedis, ReplyError


class Script:
    """A Lua script and its sha1."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def args(self, keys: Sequence[Arg], argv: Sequence[Arg]) -> tuple[Arg, ...]:
        """What follows the script in ``EVALSHA``/``EVAL``: the key count, keys and arguments."""
        return (len(keys), *keys, *argv)

    async def run(
        self, connection: PipelinedRedis, keys: Sequence[Arg], argv: Sequence[Arg]
    ) -> Any:
        """Its reply; a reply error other than an unknown script raises ``ReplyError``."""
        args = self.args(keys, argv)
        try:
            return await connection.execute("EVALSHA", self.sha, *args)
        except ReplyError as exc:
            if not unknown(exc):
                raise
        return await connection.execute("EVAL", self.source, *args)


def unknown(reply: Any) -> bool:
    """Redis does not know the script (sent by sha1): send it whole."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


# The tokens of the last 60 s live in one hash per key: a field per second that received tokens,
# "sum" (the tokens of every second field >= "low") and "low" (every older field is gone). The
# admit reads the two counters; a second that leaves the window is subtracted once, by the first
# call that sees it go, so a call costs O(1) however many seconds hold tokens.
#
# Credits: a replica whose key is busy asks ahead for a few calls' worth of admissions (ARGV[8]),
# which the script grants only while the key is far from every limit: at most a quarter of the
# requests left and never the last half of the window, tokens and spend under half their limits.
# Granted credits are members of the requests zset like admitted calls, so the calls admitted
# and the credits held by every replica never exceed the limit together.
#
# KEYS: requests zset, tokens hash, day spend, month spend.
# ARGV: now (ms), rpm, tpm, daily budget, monthly budget (-1: none), member for the zset (and
# the prefix of the credits' members), calls to admit now (1, or 0 to ask for credits only),
# credits wanted.
# Returns {status, tokens used (-1: not limited), requests left or the oldest call's ms (rpm
# refusal) or the oldest second (tpm refusal), credits granted}.
ADMIT = Script(
    """
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local day_budget, month_budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local calls, want = tonumber(ARGV[7]), tonumber(ARGV[8])
if day_budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if spent >= day_budget then return {'daily_budget', '0', '0', '0'} end
  if spent * 2 >= day_budget then want = 0 end
end
if month_budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[4]) or '0')
  if spent >= month_budget then return {'monthly_budget', '0', '0', '0'} end
  if spent * 2 >= month_budget then want = 0 end
end
local used = -1
if tpm >= 0 then
  local cutoff = math.floor(now / 1000) - 59
  local state = redis.call('HMGET', KEYS[2], 'sum', 'low')
  used = tonumber(state[1]) or 0
  local low = tonumber(state[2])
  if low and low < cutoff then
    if cutoff - low > 60 then
      used = 0
      local fields = redis.call('HGETALL', KEYS[2])
      for i = 1, #fields, 2 do
        local second = tonumber(fields[i])
        if second then
          if second < cutoff then
            redis.call('HDEL', KEYS[2], fields[i])
          else
            used = used + tonumber(fields[i + 1])
          end
        end
      end
    else
      local gone = {}
      for second = low, cutoff - 1 do gone[#gone + 1] = tostring(second) end
      local values = redis.call('HMGET', KEYS[2], unpack(gone))
      for i = 1, #gone do
        if values[i] then used = used - tonumber(values[i]) end
      end
      redis.call('HDEL', KEYS[2], unpack(gone))
    end
    redis.call('HSET', KEYS[2], 'sum', used, 'low', cutoff)
  end
  if used >= tpm then
    -- the oldest second counted (another replica's clock may be a little ahead of this one's)
    local current = math.floor(now / 1000)
    local oldest = math.max(low or cutoff, cutoff)
    if oldest <= current then
      local probe = {}
      for second = oldest, current do probe[#probe + 1] = tostring(second) end
      oldest = current
      local values = redis.call('HMGET', KEYS[2], unpack(probe))
      for i = 1, #probe do
        if values[i] then oldest = tonumber(probe[i]); break end
      end
    end
    return {'tpm', tostring(used), tostring(oldest), '0'}
  end
  if used * 2 >= tpm then want = 0 end
end
local left = -1
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  left = rpm - redis.call('ZCARD', KEYS[1])
  if left < calls or left <= 0 then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', tostring(used), first[2] or tostring(now), '0'}
  end
  if calls > 0 then
    redis.call('ZADD', KEYS[1], now, ARGV[6])
    left = left - 1
  end
  want = math.min(want, math.floor(left / 4), left - math.ceil(rpm / 2))
end
local granted = 0
if want > 0 then
  granted = want
  if rpm >= 0 then
    local members = {}
    for i = 1, granted do
      members[#members + 1] = now
      members[#members + 1] = ARGV[6] .. ':' .. i
    end
    redis.call('ZADD', KEYS[1], unpack(members))
    left = left - granted
  end
end
if rpm >= 0 then redis.call('PEXPIRE', KEYS[1], 61000) end
return {'ok', tostring(used), tostring(left), tostring(granted)}
"""
)

# KEYS: tokens hash, day spend, month spend. ARGV: second, tokens, cost.
# Tokens of a second older than "low" (a late update) count in the oldest second kept.
RECORD = Script(
    """
local tokens, cost = tonumber(ARGV[2]), tonumber(ARGV[3])
if tokens > 0 then
  local second = tonumber(ARGV[1])
  local low = tonumber(redis.call('HGET', KEYS[1], 'low'))
  if not low then
    low = second
    redis.call('HSET', KEYS[1], 'low', low)
  end
  redis.call('HINCRBY', KEYS[1], tostring(math.max(second, low)), tokens)
  redis.call('HINCRBY', KEYS[1], 'sum', tokens)
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
)


# The lease: compare-and-extend, or take when free. KEYS: the lease. ARGV: holder, ttl (ms).
LEASE_EXTEND = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
)

# The lease: compare-and-delete. KEYS: the lease. ARGV: holder.
LEASE_DELETE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)
