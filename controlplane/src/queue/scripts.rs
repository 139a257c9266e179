//! The queue's Lua scripts: one per state change, so that every transition is atomic in Redis and several
//! control plane instances may run them at once.
//!
//! Every script takes the key prefix as `ARGV[1]` and builds its keys from it (see `docs/QUEUES.md` for the key
//! layout); the time is Redis' own (`TIME`), so the instances' clocks do not have to agree. A job hash holds:
//! `p` tenant, `t` tier index, `pl` payload, `a` attempt, `s` state (`r` ready, `l` leased, `d` delayed,
//! `x` dead), `r` ready time (ms), `q` enqueue sequence number (the order within a tenant's queue), `dl` lease
//! deadline, `lt` lease time, `e` last error, `f` time of dead-lettering.

use redis::Script;

/// Helpers shared by every script (prepended to each).
const COMMON: &str = r"
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jk(id) return P .. ':job:' .. id end
local function rk(tier, t) return P .. ':ready:' .. tier .. ':' .. t end
local function tk(tier) return P .. ':tenants:' .. tier end
local function tierk(tier) return P .. ':tier:' .. tier end
local function tnk(t) return P .. ':tn:' .. t end
local function deadk(t) return P .. ':dead:' .. t end
local function donek(id) return P .. ':done:' .. id end
local LEASED = P .. ':leased'
local DELAYED = P .. ':delayed'
local N = P .. ':n'

local function make_ready(id, t, tier, seq, ready_at)
  redis.call('HSET', jk(id), 's', 'r', 'r', ready_at)
  redis.call('ZADD', rk(tier, t), seq, id)
  redis.call('HINCRBY', tierk(tier), 'r', 1)
  if redis.call('ZSCORE', tk(tier), t) == false then
    redis.call('ZADD', tk(tier), redis.call('INCR', P .. ':rr'), t)
  end
end

local function leave(id, s, t, tier)
  if s == 'r' then
    redis.call('ZREM', rk(tier, t), id)
    redis.call('HINCRBY', tierk(tier), 'r', -1)
    if redis.call('EXISTS', rk(tier, t)) == 0 then redis.call('ZREM', tk(tier), t) end
  elseif s == 'l' then
    redis.call('ZREM', LEASED, id)
    redis.call('HINCRBY', tierk(tier), 'l', -1)
    redis.call('HINCRBY', tnk(t), 'l', -1)
  elseif s == 'd' then
    redis.call('ZREM', DELAYED, id)
    redis.call('HINCRBY', tierk(tier), 'd', -1)
    redis.call('HINCRBY', tnk(t), 'd', -1)
  elseif s == 'x' then
    redis.call('ZREM', deadk(t), id)
    redis.call('HINCRBY', N, 'dead', -1)
  end
end

local function to_delayed(id, t, tier, at)
  redis.call('HSET', jk(id), 's', 'd', 'r', at)
  redis.call('ZADD', DELAYED, at, id)
  redis.call('HINCRBY', tierk(tier), 'd', 1)
  redis.call('HINCRBY', tnk(t), 'd', 1)
end

local function to_dead(id, t, err, now)
  redis.call('HSET', jk(id), 's', 'x', 'e', err, 'f', now)
  redis.call('ZADD', deadk(t), now, id)
  redis.call('HINCRBY', N, 'dead', 1)
  redis.call('HINCRBY', N, 'dead_lettered', 1)
end
";

/// ARGV: prefix, then per job: id, tenant, tier, payload, not_before_ms (or ''). Returns the number accepted.
const ENQUEUE: &str = r"
local now = now_ms()
local n = 0
local i = 2
while i + 4 <= #ARGV do
  local id, t, tier, pl, nb = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if redis.call('EXISTS', jk(id)) == 0 and redis.call('EXISTS', donek(id)) == 0 then
    local seq = redis.call('INCR', P .. ':seq')
    redis.call('HSET', jk(id), 'p', t, 't', tier, 'pl', pl, 'a', 1, 'q', seq)
    local at = tonumber(nb)
    if at and at > now then to_delayed(id, t, tier, at) else make_ready(id, t, tier, seq, now) end
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', N, 'enqueued', n) end
return n
";

/// ARGV: prefix, worker, max, visibility ms, weights[3], concurrency[3], rate[3], tenant scan cap.
/// Returns 7 strings per lease: id, tenant, tier, payload, attempt, ready_ms, leased_ms.
const RESERVE: &str = r"
local now = now_ms()
local worker, max, vis = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local w, conc, rate = {}, {}, {}
for k = 0, 2 do
  w[k] = tonumber(ARGV[5 + k])
  conc[k] = tonumber(ARGV[8 + k])
  rate[k] = tonumber(ARGV[11 + k])
end
local scan = tonumber(ARGV[14])
redis.call('ZADD', P .. ':workers', now, worker)
local WRR = P .. ':wrr'
local saved = redis.call('HMGET', WRR, '0', '1', '2')
local c = {}
for k = 0, 2 do c[k] = tonumber(saved[k + 1]) or 0 end
local exhausted, blocked = {}, {}

local function take_token(t, r)
  if r <= 0 then return true end
  local key = P .. ':bucket:' .. t
  local b = redis.call('HMGET', key, 'k', 'ts')
  local burst = math.max(1, r)
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * r / 1000) end
  if tokens < 1 then return false end
  redis.call('HSET', key, 'k', tostring(tokens - 1), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst / r * 1000) + 1000)
  return true
end

local function pick(k)
  local key = tk(k)
  local off = 0
  while off < scan do
    local ts = redis.call('ZRANGE', key, off, off + 31)
    if #ts == 0 then return nil end
    for _, t in ipairs(ts) do
      if not blocked[t] then
        local l = tonumber(redis.call('HGET', tnk(t), 'l')) or 0
        if (conc[k] <= 0 or l < conc[k]) and take_token(t, rate[k]) then return t end
        blocked[t] = true
      end
    end
    off = off + 32
  end
  return nil
end

local out = {}
local got = 0
while got < max do
  local total, best = 0, nil
  local tc = {}
  for k = 0, 2 do
    if not exhausted[k] and w[k] > 0 and redis.call('EXISTS', tk(k)) == 1 then
      tc[k] = c[k] + w[k]
      total = total + w[k]
      if best == nil or tc[k] > tc[best] then best = k end
    end
  end
  if best == nil then break end
  local t = pick(best)
  if t == nil then
    exhausted[best] = true
  else
    local popped = redis.call('ZPOPMIN', rk(best, t))
    if redis.call('EXISTS', rk(best, t)) == 0 then
      redis.call('ZREM', tk(best), t)
    else
      redis.call('ZADD', tk(best), redis.call('INCR', P .. ':rr'), t)
    end
    local id = popped[1]
    local v = nil
    if id then v = redis.call('HMGET', jk(id), 'pl', 'a', 'r') end
    if v and v[1] then
      for k = 0, 2 do c[k] = tc[k] or 0 end
      c[best] = c[best] - total
      local dl = now + vis
      redis.call('HSET', jk(id), 's', 'l', 'dl', dl, 'lt', now)
      redis.call('ZADD', LEASED, dl, id)
      redis.call('HINCRBY', tierk(best), 'r', -1)
      redis.call('HINCRBY', tierk(best), 'l', 1)
      redis.call('HINCRBY', tnk(t), 'l', 1)
      out[#out + 1] = id
      out[#out + 1] = t
      out[#out + 1] = tostring(best)
      out[#out + 1] = v[1]
      out[#out + 1] = v[2]
      out[#out + 1] = v[3]
      out[#out + 1] = tostring(now)
      got = got + 1
    elseif id then
      redis.call('HINCRBY', tierk(best), 'r', -1)
    end
  end
end
if got > 0 then redis.call('HINCRBY', N, 'leased', got) end
redis.call('HSET', WRR, '0', c[0], '1', c[1], '2', c[2])
return out
";

/// ARGV: prefix, id, attempt, visibility ms. Returns 1 when extended.
const EXTEND: &str = r"
local id = ARGV[2]
local v = redis.call('HMGET', jk(id), 's', 'a')
if v[1] ~= 'l' or v[2] ~= ARGV[3] then return 0 end
local dl = now_ms() + tonumber(ARGV[4])
redis.call('HSET', jk(id), 'dl', dl)
redis.call('ZADD', LEASED, dl, id)
return 1
";

/// ARGV: prefix, id, attempt ('' = any attempt, any state), dedup ms. Returns 1 when completed.
const COMPLETE: &str = r"
local id = ARGV[2]
local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a')
if not v[1] then return 0 end
if ARGV[3] ~= '' and (v[1] ~= 'l' or v[4] ~= ARGV[3]) then return 0 end
leave(id, v[1], v[2], v[3])
redis.call('DEL', jk(id))
redis.call('SET', donek(id), '1', 'PX', ARGV[4])
redis.call('HINCRBY', N, 'completed', 1)
return 1
";

/// ARGV: prefix, dedup ms, then pairs of id, attempt ('' = any). Returns 1 or 0 per pair.
const COMPLETE_MANY: &str = r"
local out = {}
for i = 3, #ARGV - 1, 2 do
  local id, att = ARGV[i], ARGV[i + 1]
  local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a')
  if not v[1] or (att ~= '' and (v[1] ~= 'l' or v[4] ~= att)) then
    out[#out + 1] = 0
  else
    leave(id, v[1], v[2], v[3])
    redis.call('DEL', jk(id))
    redis.call('SET', donek(id), '1', 'PX', ARGV[2])
    redis.call('HINCRBY', N, 'completed', 1)
    out[#out + 1] = 1
  end
end
return out
";

/// ARGV: prefix, id, attempt, error, delay ms, max attempts. Returns {0} stale, {1, now} dead, {2, until} delayed.
const RETRY: &str = r"
local id = ARGV[2]
local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a')
if v[1] ~= 'l' or v[4] ~= ARGV[3] then return {0, 0} end
local now = now_ms()
leave(id, 'l', v[2], v[3])
redis.call('HSET', jk(id), 'e', ARGV[4])
local a = tonumber(v[4])
if a >= tonumber(ARGV[6]) then
  to_dead(id, v[2], ARGV[4], now)
  return {1, now}
end
redis.call('HSET', jk(id), 'a', a + 1)
local at = now + tonumber(ARGV[5])
to_delayed(id, v[2], v[3], at)
redis.call('HINCRBY', N, 'retried', 1)
return {2, at}
";

/// ARGV: prefix, id, attempt, until ms. Returns 1 when deferred.
const DEFER: &str = r"
local id = ARGV[2]
local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a')
if v[1] ~= 'l' or v[4] ~= ARGV[3] then return 0 end
leave(id, 'l', v[2], v[3])
to_delayed(id, v[2], v[3], tonumber(ARGV[4]))
return 1
";

/// ARGV: prefix, then triples of id, attempt, until ms. Returns 1 or 0 per triple (as `DEFER`).
const DEFER_MANY: &str = r"
local out = {}
for i = 2, #ARGV - 2, 3 do
  local id = ARGV[i]
  local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a')
  if v[1] ~= 'l' or v[4] ~= ARGV[i + 1] then
    out[#out + 1] = 0
  else
    leave(id, 'l', v[2], v[3])
    to_delayed(id, v[2], v[3], tonumber(ARGV[i + 2]))
    out[#out + 1] = 1
  end
end
return out
";

/// ARGV: prefix, ids... Returns how many delayed jobs were made ready.
const WAKE: &str = r"
local now = now_ms()
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'q')
  if v[1] == 'd' then
    leave(id, 'd', v[2], v[3])
    make_ready(id, v[2], v[3], tonumber(v[4]), now)
    n = n + 1
  end
end
return n
";

/// ARGV: prefix, id, attempt, error. Returns 1 when dead-lettered.
const DEAD_LETTER: &str = r"
local id = ARGV[2]
local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a')
if v[1] ~= 'l' or v[4] ~= ARGV[3] then return 0 end
leave(id, 'l', v[2], v[3])
to_dead(id, v[2], ARGV[4], now_ms())
return 1
";

/// ARGV: prefix, tenant, id, dedup ms. Returns 1 when the job was found (and removed).
const CANCEL: &str = r"
local id = ARGV[3]
local v = redis.call('HMGET', jk(id), 's', 'p', 't')
if not v[1] or v[2] ~= ARGV[2] then return 0 end
leave(id, v[1], v[2], v[3])
redis.call('DEL', jk(id))
redis.call('SET', donek(id), '1', 'PX', ARGV[4])
return 1
";

/// ARGV: prefix, limit, max attempts. Returns {reclaimed, promoted}.
const MAINTAIN: &str = r"
local now = now_ms()
local lim = tonumber(ARGV[2])
local rec, pro = 0, 0
local ids = redis.call('ZRANGEBYSCORE', LEASED, '-inf', now, 'LIMIT', 0, lim)
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a', 'q')
  if v[1] ~= 'l' then
    redis.call('ZREM', LEASED, id)
  else
    leave(id, 'l', v[2], v[3])
    local a = tonumber(v[4])
    redis.call('HINCRBY', N, 'reclaimed', 1)
    if a >= tonumber(ARGV[3]) then
      to_dead(id, v[2], 'lease expired on attempt ' .. a .. ': its worker stopped answering', now)
    else
      redis.call('HSET', jk(id), 'a', a + 1)
      make_ready(id, v[2], v[3], tonumber(v[5]), now)
    end
    rec = rec + 1
  end
end
ids = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, lim)
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', jk(id), 's', 'p', 't', 'q', 'r')
  if v[1] ~= 'd' then
    redis.call('ZREM', DELAYED, id)
  else
    leave(id, 'd', v[2], v[3])
    make_ready(id, v[2], v[3], tonumber(v[4]), tonumber(v[5]) or now)
    pro = pro + 1
  end
end
redis.call('ZREMRANGEBYSCORE', P .. ':workers', '-inf', now - 86400000)
return {rec, pro}
";

/// ARGV: prefix, tenant, limit, after id (or ''). Returns 5 strings per dead letter: id, payload, attempts,
/// error, failed_ms.
const DEAD_LETTERS: &str = r"
local key = deadk(ARGV[2])
local start = 0
if ARGV[4] ~= '' then
  local r = redis.call('ZRANK', key, ARGV[4])
  if not r then return {} end
  start = r + 1
end
local ids = redis.call('ZRANGE', key, start, start + tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', jk(id), 'pl', 'a', 'e', 'f')
  out[#out + 1] = id
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or '0'
  out[#out + 1] = v[3] or ''
  out[#out + 1] = v[4] or '0'
end
return out
";

/// ARGV: prefix, tenant, id. Returns 1 when requeued.
const REQUEUE_DEAD: &str = r"
local id = ARGV[3]
local v = redis.call('HMGET', jk(id), 's', 'p', 't')
if v[1] ~= 'x' or v[2] ~= ARGV[2] then return 0 end
leave(id, 'x', v[2], v[3])
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', jk(id), 'a', 1, 'q', seq)
redis.call('HDEL', jk(id), 'e', 'f')
make_ready(id, v[2], v[3], seq, now_ms())
return 1
";

/// ARGV: prefix, tenant, id, dedup ms. Returns 1 when discarded.
const DISCARD_DEAD: &str = r"
local id = ARGV[3]
local v = redis.call('HMGET', jk(id), 's', 'p', 't')
if v[1] ~= 'x' or v[2] ~= ARGV[2] then return 0 end
leave(id, 'x', v[2], v[3])
redis.call('DEL', jk(id))
redis.call('SET', donek(id), '1', 'PX', ARGV[4])
return 1
";

/// ARGV: prefix, tenant scan cap. Returns per tier {ready, leased, delayed, tenants, oldest age}, then
/// {dead, enqueued, leased, completed, retried, dead_lettered, reclaimed}, then worker name / last seen pairs.
const STATS: &str = r"
local now = now_ms()
local scan = tonumber(ARGV[2])
local out = {}
for k = 0, 2 do
  local v = redis.call('HMGET', tierk(k), 'r', 'l', 'd')
  local oldest = 0
  for _, t in ipairs(redis.call('ZRANGE', tk(k), 0, scan - 1)) do
    local h = redis.call('ZRANGE', rk(k, t), 0, 0)
    if h[1] then
      local r = tonumber(redis.call('HGET', jk(h[1]), 'r'))
      if r and now - r > oldest then oldest = now - r end
    end
  end
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or '0'
  out[#out + 1] = v[3] or '0'
  out[#out + 1] = tostring(redis.call('ZCARD', tk(k)))
  out[#out + 1] = tostring(oldest)
end
local n = redis.call('HMGET', N, 'dead', 'enqueued', 'leased', 'completed', 'retried', 'dead_lettered', 'reclaimed')
for i = 1, 7 do out[#out + 1] = n[i] or '0' end
local ws = redis.call('ZRANGEBYSCORE', P .. ':workers', now - 60000, '+inf', 'WITHSCORES')
for i = 1, #ws do out[#out + 1] = ws[i] end
return out
";

/// ARGV: prefix, tenant. Returns {ready, leased, delayed, dead, oldest age}.
const TENANT_STATS: &str = r"
local now = now_ms()
local t = ARGV[2]
local ready, oldest = 0, 0
for k = 0, 2 do
  ready = ready + redis.call('ZCARD', rk(k, t))
  local h = redis.call('ZRANGE', rk(k, t), 0, 0)
  if h[1] then
    local r = tonumber(redis.call('HGET', jk(h[1]), 'r'))
    if r and now - r > oldest then oldest = now - r end
  end
end
local v = redis.call('HMGET', tnk(t), 'l', 'd')
return {ready, tonumber(v[1]) or 0, tonumber(v[2]) or 0, redis.call('ZCARD', deadk(t)), oldest}
";

/// The compiled scripts of a queue.
pub(crate) struct Scripts {
    pub enqueue: Script,
    pub reserve: Script,
    pub extend: Script,
    pub complete: Script,
    pub complete_many: Script,
    pub retry: Script,
    pub defer: Script,
    pub defer_many: Script,
    pub wake: Script,
    pub dead_letter: Script,
    pub cancel: Script,
    pub maintain: Script,
    pub dead_letters: Script,
    pub requeue_dead: Script,
    pub discard_dead: Script,
    pub stats: Script,
    pub tenant_stats: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

impl Scripts {
    /// Compiles (hashes) every script; Redis loads them on first use and again after a restart.
    pub(crate) fn new() -> Scripts {
        Scripts {
            enqueue: script(ENQUEUE),
            reserve: script(RESERVE),
            extend: script(EXTEND),
            complete: script(COMPLETE),
            complete_many: script(COMPLETE_MANY),
            retry: script(RETRY),
            defer: script(DEFER),
            defer_many: script(DEFER_MANY),
            wake: script(WAKE),
            dead_letter: script(DEAD_LETTER),
            cancel: script(CANCEL),
            maintain: script(MAINTAIN),
            dead_letters: script(DEAD_LETTERS),
            requeue_dead: script(REQUEUE_DEAD),
            discard_dead: script(DISCARD_DEAD),
            stats: script(STATS),
            tenant_stats: script(TENANT_STATS),
        }
    }
}
