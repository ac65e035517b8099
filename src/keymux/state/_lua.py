"""The Lua scripts of the Redis store.

Each script reads Redis's own clock (``TIME``), so the hosts' clocks never matter, and every
key it touches carries the same hash tag (``{provider:fingerprint}`` of a key, or
``{provider:g:group}`` of a group's budget), so in Redis Cluster each runs in one slot. Times
are integer microseconds inside (Lua numbers are doubles: exact to 2^53). Everything written
gets a TTL.

Budget keys, per model scope (``P`` is the prefix, ``T`` the tag, ``S`` the scope):

    P:{T}:rq:S   sorted set: request sends of the window (member = send id, score = time)
    P:{T}:tk:S   sorted set: token sends (member = "send id|tokens", score = time)
    P:{T}:tt:S   the tokens in ``tk`` (kept with it)
    P:{T}:lm:S   hash: learned limits (rl, rw, tl, tw), the model's cooldown and parking
                 (cool, park), configured-rate schedules (rpm, tpm), the day's count (dc, ds)
"""

from __future__ import annotations

from ._store import DAY, DEFAULT_SPAN, GCRA_SLACK, GCRA_TOLERANCE

__all__ = ["BEAT", "LIMITS_TTL_MS", "RESERVE", "SETTLE", "STATUS"]

#: learned limits and the model's status outlive the logs: a day after their last change
LIMITS_TTL_MS = int(DAY * 1000)

_CONSTANTS = {
    "@SPAN@": int(DEFAULT_SPAN * 1_000_000),
    "@SLACK@": int(GCRA_SLACK * 1_000_000),
    "@TOLERANCE@": int(GCRA_TOLERANCE * 1_000_000),
    "@LIMITS_TTL@": LIMITS_TTL_MS,
    "@DAY@": int(DAY * 1_000_000),
}


def _fill(script: str) -> str:
    for name, value in _CONSTANTS.items():
        script = script.replace(name, str(value))
    return script


_HELPERS = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(v) return tonumber(v) or 0 end
local function amount(m) return tonumber(string.match(m, '|(%d+)$')) or 0 end
-- the tokens total of a token log: its counter, or (lost) the sum of its members
local function total_of(tk, tt)
  local v = redis.call('GET', tt)
  if v then return tonumber(v) end
  local total = 0
  for _, m in ipairs(redis.call('ZRANGE', tk, 0, -1)) do total = total + amount(m) end
  return total
end
-- drop the token sends older than the span, keeping the total right
local function prune_tokens(tk, tt, horizon)
  local v = redis.call('GET', tt)
  local gone = redis.call('ZRANGEBYSCORE', tk, '-inf', horizon)
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', tk, '-inf', horizon) end
  if not v then return total_of(tk, tt), true end
  local total = tonumber(v)
  for _, m in ipairs(gone) do total = total - amount(m) end
  if total < 0 then total = 0 end
  return total, #gone > 0
end
"""

#: may this send go? KEYS: rq, tk, tt, lm, and the key's status hash when it shares the
#: budget's tag (a key of no group: a disabled key is refused at once, before its push has
#: reached every process). ARGV: member, tokens, rl, rw, tl, tw (what the asking process knows;
#: 0 unknown; windows in µs), rpm interval, tpm interval (µs per unit; 0 none), rpd (0 none).
#: The constants (@NAME@) are filled in below. Returns: ok, now, requests, oldest request,
#: tokens, oldest token, rl, rw, tl, tw, rpm tat, tpm tat, day count, day start, wait, cool,
#: park, the key's disabled reason and error ('' when it is not).
RESERVE = (
    _HELPERS
    + """
local now = now_us()
local member, tokens = ARGV[1], tonumber(ARGV[2])
local rl, rw, tl, tw = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local rpm_i, tpm_i, rpd = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local span0, slack, tol, lm_ttl, day = @SPAN@, @SLACK@, @TOLERANCE@, @LIMITS_TTL@, @DAY@
local h = redis.call('HMGET', KEYS[4], 'rl', 'rw', 'tl', 'tw', 'cool', 'park', 'rpm', 'tpm',
  'dc', 'ds')
local function low(a, b) if a > 0 and b > 0 then return math.min(a, b) end return math.max(a, b) end
rl = low(rl, num(h[1])); rw = math.max(rw, num(h[2]))
tl = low(tl, num(h[3])); tw = math.max(tw, num(h[4]))
local cool, park, rpm_tat, tpm_tat = num(h[5]), num(h[6]), num(h[7]), num(h[8])
local dc, ds = num(h[9]), num(h[10])
local ok, wait = 1, 0
local function hold(t) ok = 0; if t > wait then wait = t end end
local dis, err = '', ''
if #KEYS >= 5 then
  local st = redis.call('HMGET', KEYS[5], 'dis', 'err')
  if st[1] then dis = st[1]; err = st[2] or ''; ok = 0 end
end
if cool > now then hold(cool) end
if park > now then hold(park) end
-- requests
local rspan = rw > 0 and rw or span0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - rspan)
local count = redis.call('ZCARD', KEYS[1])
if rl > 0 and count + 1 > rl then
  local i = math.floor(count - rl)
  local e = redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')
  hold(tonumber(e[2]) + rspan)
end
-- tokens
local tspan = tw > 0 and tw or span0
local total, pruned = prune_tokens(KEYS[2], KEYS[3], now - tspan)
if tl > 0 then
  local need = tokens > 0 and tokens or 1
  if need > tl then need = tl end
  if total + need > tl then
    local excess, freed, at = total + need - tl, 0, now
    local es = redis.call('ZRANGE', KEYS[2], 0, 255, 'WITHSCORES')
    for i = 1, #es, 2 do
      freed = freed + amount(es[i]); at = tonumber(es[i + 1])
      if freed >= excess then break end
    end
    hold(at + tspan)
  end
end
-- configured rates and the day
if rpm_i > 0 and rpm_tat > now + tol then hold(rpm_tat) end
if tpm_i > 0 and tokens > 0 and tpm_tat > now + tol then hold(tpm_tat) end
if rpd > 0 then
  if ds + day <= now then dc = 0 end
  if dc + 1 > rpd then hold(ds + day) end
end
if ok == 1 then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], math.ceil(rspan / 1000) + 1000)
  count = count + 1
  if tokens > 0 then
    redis.call('ZADD', KEYS[2], now, member .. '|' .. tokens)
    redis.call('PEXPIRE', KEYS[2], math.ceil(tspan / 1000) + 1000)
    total = total + tokens
    pruned = true
  end
  local set = {}
  if rpm_i > 0 then
    local tat = rpm_tat
    if now - tat > math.min(rpm_i, slack) then tat = now end
    rpm_tat = tat + rpm_i
    set[#set + 1] = 'rpm'; set[#set + 1] = rpm_tat
  end
  if tpm_i > 0 and tokens > 0 then
    local tat = tpm_tat
    if now - tat > math.min(tpm_i, slack) then tat = now end
    tpm_tat = tat + tokens * tpm_i
    set[#set + 1] = 'tpm'; set[#set + 1] = tpm_tat
  end
  if rpd > 0 then
    if dc == 0 then ds = now end
    dc = dc + 1
    set[#set + 1] = 'dc'; set[#set + 1] = dc; set[#set + 1] = 'ds'; set[#set + 1] = ds
  end
  if #set > 0 then
    redis.call('HSET', KEYS[4], unpack(set))
    redis.call('PEXPIRE', KEYS[4], math.max(lm_ttl, math.ceil((ds + day - now) / 1000)))
  end
end
if pruned then
  redis.call('SET', KEYS[3], total, 'PX', math.ceil(tspan / 1000) + 1000)
end
local oldest = 0
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then oldest = tonumber(first[2]) end
local toldest = 0
first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first > 0 then toldest = tonumber(first[2]) end
if ok == 1 then wait = 0 end
return {ok, now, count, oldest, total, toldest, rl, rw, tl, tw, rpm_tat, tpm_tat, dc, ds, wait,
  cool, park, dis, err}
"""
)
RESERVE = _fill(RESERVE)

#: a correction. KEYS: rq, tk, tt, lm. ARGV: member, sent (µs, 0: no send), estimate, actual
#: (-1: keep), refused (0/1), rl, rw, tl, tw (learned; 0 none).
SETTLE = (
    _HELPERS
    + """
local now = now_us()
local member, sent, est = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local actual, refused = tonumber(ARGV[4]), tonumber(ARGV[5])
local rl, rw, tl, tw = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local span0, lm_ttl = @SPAN@, @LIMITS_TTL@
if sent > 0 then
  if refused == 1 then
    redis.call('ZREM', KEYS[1], member)
    actual = 0
  end
  if actual >= 0 and actual ~= est then
    local tspan = math.max(tw, num(redis.call('HGET', KEYS[4], 'tw')))
    if tspan <= 0 then tspan = span0 end
    local total = prune_tokens(KEYS[2], KEYS[3], now - tspan)
    if est > 0 and redis.call('ZREM', KEYS[2], member .. '|' .. est) == 1 then
      total = total - est
    end
    if actual > 0 and sent > now - tspan then
      redis.call('ZADD', KEYS[2], sent, member .. '|' .. actual)
      redis.call('PEXPIRE', KEYS[2], math.ceil(tspan / 1000) + 1000)
      total = total + actual
    end
    if total < 0 then total = 0 end
    redis.call('SET', KEYS[3], total, 'PX', math.ceil(tspan / 1000) + 1000)
  end
end
local set = {}
if rl > 0 then set[#set + 1] = 'rl'; set[#set + 1] = rl end
if tl > 0 then set[#set + 1] = 'tl'; set[#set + 1] = tl end
if rw > 0 or tw > 0 then
  local h = redis.call('HMGET', KEYS[4], 'rw', 'tw')
  if rw > num(h[1]) then set[#set + 1] = 'rw'; set[#set + 1] = rw end
  if tw > num(h[2]) then set[#set + 1] = 'tw'; set[#set + 1] = tw end
end
if #set > 0 then
  redis.call('HSET', KEYS[4], unpack(set))
  if redis.call('PTTL', KEYS[4]) < lm_ttl then redis.call('PEXPIRE', KEYS[4], lm_ttl) end
end
return 1
"""
)
SETTLE = _fill(SETTLE)

#: a status change, pushed to every process. KEYS: the key's status hash (P:{T}:st) or a
#: budget scope's limits hash (P:{T}:lm:S). ARGV: channel, origin, op (disable, enable, cool,
#: park), target, scope, seconds, reason, error, ttl (ms), level ('k': the key itself, 'b':
#: a budget's scope).
#: Returns until (µs; cool and park), or 0.
STATUS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op, ttl = ARGV[3], tonumber(ARGV[9])
local untilv = 0
if op == 'disable' then
  redis.call('HSET', KEYS[1], 'dis', ARGV[7], 'err', ARGV[8], 'at', now)
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
elseif op == 'enable' then
  redis.call('HDEL', KEYS[1], 'dis', 'err', 'at')
else
  untilv = now + math.floor(tonumber(ARGV[6]) * 1000000)
  local cur = tonumber(redis.call('HGET', KEYS[1], op)) or 0
  if untilv <= cur then return cur end
  redis.call('HSET', KEYS[1], op, untilv)
  local keep = math.ceil((untilv - now) / 1000) + 60000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
end
redis.call('PUBLISH', ARGV[1], cjson.encode({o = ARGV[2], op = op, t = ARGV[4], s = ARGV[5],
  l = ARGV[10], u = string.format('%.0f', untilv), r = ARGV[7], e = ARGV[8]}))
return untilv
"""

#: a heartbeat. KEYS: the processes' sorted set. ARGV: process, stale (µs), ttl (ms).
#: Returns: now, processes alive.
BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {now, redis.call('ZCARD', KEYS[1])}
"""
