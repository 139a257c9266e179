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
-- Redis 7.0 turns a Lua number given to redis.call into text with printf's %.17g, and Lua concatenates numbers
-- with %.14g: both go through glibc's slow floating-point formatting. Integers are formatted here once, as
-- integers, and the tiers have their names as strings.
local function I(x) return string.format('%d', x) end
local TIER = {[0] = '0', '1', '2'}
-- `cmd [key] items...` in calls of at most 512 items (Lua's stack bounds unpack); no key: the items are keys.
local function bulk(cmd, key, items)
  local i, n = 1, #items
  while i <= n do
    local j = math.min(i + 511, n)
    if key then redis.call(cmd, key, unpack(items, i, j)) else redis.call(cmd, unpack(items, i, j)) end
    i = j + 1
  end
end

local function make_ready(id, t, tier, seq, ready_at)
  redis.call('HSET', jk(id), 's', 'r', 'r', I(ready_at))
  redis.call('ZADD', rk(tier, t), I(seq), id)
  redis.call('HINCRBY', tierk(tier), 'r', '1')
  if redis.call('ZSCORE', tk(tier), t) == false then
    redis.call('ZADD', tk(tier), redis.call('INCR', P .. ':rr'), t)
  end
end

local function leave(id, s, t, tier)
  if s == 'r' then
    redis.call('ZREM', rk(tier, t), id)
    redis.call('HINCRBY', tierk(tier), 'r', '-1')
    if redis.call('EXISTS', rk(tier, t)) == 0 then redis.call('ZREM', tk(tier), t) end
  elseif s == 'l' then
    redis.call('ZREM', LEASED, id)
    redis.call('HINCRBY', tierk(tier), 'l', '-1')
    redis.call('HINCRBY', tnk(t), 'l', '-1')
  elseif s == 'd' then
    redis.call('ZREM', DELAYED, id)
    redis.call('HINCRBY', tierk(tier), 'd', '-1')
    redis.call('HINCRBY', tnk(t), 'd', '-1')
  elseif s == 'x' then
    redis.call('ZREM', deadk(t), id)
    redis.call('HINCRBY', N, 'dead', '-1')
  end
end

local function to_delayed(id, t, tier, at)
  redis.call('HSET', jk(id), 's', 'd', 'r', I(at))
  redis.call('ZADD', DELAYED, I(at), id)
  redis.call('HINCRBY', tierk(tier), 'd', '1')
  redis.call('HINCRBY', tnk(t), 'd', '1')
end

local function to_dead(id, t, err, now)
  redis.call('HSET', jk(id), 's', 'x', 'e', err, 'f', I(now))
  redis.call('ZADD', deadk(t), I(now), id)
  redis.call('HINCRBY', N, 'dead', '1')
  redis.call('HINCRBY', N, 'dead_lettered', '1')
end
";

/// ARGV: prefix, then per job: id, tenant, tier, payload, not_before_ms (or ''). Returns the number accepted.
const ENQUEUE: &str = r"
local now = now_ms()
local NOW = I(now)
local seq = tonumber(redis.call('GET', P .. ':seq')) or 0
local n = 0
-- Ready jobs are added to their tenant's queue in one ZADD per tenant, and counted once per tier.
local ready, readyn, keys = {}, {}, {}
local i = 2
while i + 4 <= #ARGV do
  local id, t, tier, pl, nb = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if redis.call('EXISTS', jk(id), donek(id)) == 0 then
    seq = seq + 1
    local q = I(seq)
    local at = tonumber(nb)
    if at and at > now then
      redis.call('HSET', jk(id), 'p', t, 't', tier, 'pl', pl, 'a', '1', 'q', q)
      to_delayed(id, t, tier, at)
    else
      redis.call('HSET', jk(id), 'p', t, 't', tier, 'pl', pl, 'a', '1', 'q', q, 's', 'r', 'r', NOW)
      local key = rk(tier, t)
      local z = ready[key]
      if z == nil then
        z = {}
        ready[key] = z
        keys[#keys + 1] = {key, tier, t}
      end
      z[#z + 1] = q
      z[#z + 1] = id
      readyn[tier] = (readyn[tier] or 0) + 1
    end
    n = n + 1
  end
end
if n > 0 then
  redis.call('SET', P .. ':seq', I(seq))
  for _, k in ipairs(keys) do
    bulk('ZADD', k[1], ready[k[1]])
    if redis.call('ZSCORE', tk(k[2]), k[3]) == false then
      redis.call('ZADD', tk(k[2]), redis.call('INCR', P .. ':rr'), k[3])
    end
  end
  for tier, c in pairs(readyn) do redis.call('HINCRBY', tierk(tier), 'r', I(c)) end
  redis.call('HINCRBY', N, 'enqueued', I(n))
end
return n
";

/// ARGV: prefix, worker, max, visibility ms, weights[3], concurrency[3], rate[3], tenant scan cap.
/// Returns 7 strings per lease: id, tenant, tier, payload, attempt, ready_ms, leased_ms.
const RESERVE: &str = r"
local now = now_ms()
local NOW = I(now)
local worker, max, vis = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local DL = I(now + vis)
local w, conc, rate = {}, {}, {}
for k = 0, 2 do
  w[k] = tonumber(ARGV[5 + k])
  conc[k] = tonumber(ARGV[8 + k])
  rate[k] = tonumber(ARGV[11 + k])
end
local scan = tonumber(ARGV[14])
redis.call('ZADD', P .. ':workers', NOW, worker)
local WRR = P .. ':wrr'
local saved = redis.call('HMGET', WRR, '0', '1', '2')
local c = {}
for k = 0, 2 do c[k] = tonumber(saved[k + 1]) or 0 end
local exhausted, blocked = {}, {}

-- Nothing else runs while a script does, so what this call reads once it keeps in locals and writes back at the
-- end: the tiers' tenant lines, the tenants' lease counts, ready counts and token buckets, the counters.
-- A tier's line: the tenants in round-robin order as stored (`front`, read 32 at a time, at most `scan`), then
-- the tenants this call served, in the order it last served them (`back`): where the stored order would have
-- them once each had been moved to the back.
local lines = {}
local leased_n, ready_left, buckets = {}, {}, {}
local dr, dl, dt = {[0] = 0, 0, 0}, {[0] = 0, 0, 0}, {}
local leases = {}

local function line(k)
  local l = lines[k]
  if l == nil then
    l = {front = {}, read = 0, all = false, back = {}, moved = {}, gone = {}}
    lines[k] = l
  end
  return l
end

local function take_token(t, r)
  if r <= 0 then return true end
  local b = buckets[t]
  if b == nil then
    local v = redis.call('HMGET', P .. ':bucket:' .. t, 'k', 'ts')
    local burst = math.max(1, r)
    local tokens = tonumber(v[1]) or burst
    local ts = tonumber(v[2]) or now
    if now > ts then tokens = math.min(burst, tokens + (now - ts) * r / 1000) end
    b = {k = tokens, burst = burst, r = r, dirty = false}
    buckets[t] = b
  end
  if b.k < 1 then return false end
  b.k = b.k - 1
  b.dirty = true
  return true
end

local function eligible(k, t)
  if blocked[t] then return false end
  local l = leased_n[t]
  if l == nil then
    l = tonumber(redis.call('HGET', tnk(t), 'l')) or 0
    leased_n[t] = l
  end
  if (conc[k] <= 0 or l < conc[k]) and take_token(t, rate[k]) then return true end
  blocked[t] = true
  return false
end

-- The next tenant of tier k to serve, or nil.
local function pick(k)
  local l = line(k)
  local seen = 0
  local i = 1
  while seen < scan do
    if i > #l.front then
      if l.all or l.read >= scan then break end
      local more = redis.call('ZRANGE', tk(TIER[k]), l.read, l.read + 31)
      l.read = l.read + #more
      if #more < 32 then l.all = true end
      if #more == 0 then break end
      for _, t in ipairs(more) do l.front[#l.front + 1] = t end
    end
    local t = l.front[i]
    if not l.moved[t] and not l.gone[t] then
      seen = seen + 1
      if eligible(k, t) then return t end
    end
    i = i + 1
  end
  for _, t in ipairs(l.back) do
    if seen >= scan then break end
    if not l.gone[t] then
      seen = seen + 1
      if eligible(k, t) then return t end
    end
  end
  return nil
end

-- Tenant t of tier k was served: to the back of the line, or out of it when its queue is empty.
local function served(k, t, empty)
  local l = line(k)
  if l.moved[t] then
    for j, u in ipairs(l.back) do
      if u == t then table.remove(l.back, j) break end
    end
  end
  l.moved[t] = true
  if empty then l.gone[t] = true else l.back[#l.back + 1] = t end
end

local out = {}
local got = 0
while got < max do
  local total, best = 0, nil
  local tc = {}
  for k = 0, 2 do
    if not exhausted[k] and w[k] > 0 then
      if lines[k] == nil and redis.call('EXISTS', tk(TIER[k])) == 0 then
        exhausted[k] = true
      else
        tc[k] = c[k] + w[k]
        total = total + w[k]
        if best == nil or tc[k] > tc[best] then best = k end
      end
    end
  end
  if best == nil then break end
  local t = pick(best)
  if t == nil then
    exhausted[best] = true
  else
    local key = rk(TIER[best], t)
    local left = ready_left[key]
    if left == nil then left = redis.call('ZCARD', key) end
    local popped = redis.call('ZPOPMIN', key)
    local id = popped[1]
    if id then left = left - 1 else left = 0 end
    ready_left[key] = left
    served(best, t, left <= 0)
    local v = nil
    if id then v = redis.call('HMGET', jk(id), 'pl', 'a', 'r') end
    if v and v[1] then
      for k = 0, 2 do c[k] = tc[k] or 0 end
      c[best] = c[best] - total
      redis.call('HSET', jk(id), 's', 'l', 'dl', DL, 'lt', NOW)
      leases[#leases + 1] = DL
      leases[#leases + 1] = id
      dr[best] = dr[best] - 1
      dl[best] = dl[best] + 1
      dt[t] = (dt[t] or 0) + 1
      leased_n[t] = leased_n[t] + 1
      out[#out + 1] = id
      out[#out + 1] = t
      out[#out + 1] = TIER[best]
      out[#out + 1] = v[1]
      out[#out + 1] = v[2]
      out[#out + 1] = v[3]
      out[#out + 1] = NOW
      got = got + 1
    elseif id then
      dr[best] = dr[best] - 1
    end
  end
end

-- Write back what the call changed.
for k, l in pairs(lines) do
  for t in pairs(l.gone) do redis.call('ZREM', tk(TIER[k]), t) end
  if #l.back > 0 then
    local last = redis.call('INCRBY', P .. ':rr', #l.back)
    local z = {}
    for j, t in ipairs(l.back) do
      z[#z + 1] = I(last - #l.back + j)
      z[#z + 1] = t
    end
    bulk('ZADD', tk(TIER[k]), z)
  end
end
for t, b in pairs(buckets) do
  if b.dirty then
    redis.call('HSET', P .. ':bucket:' .. t, 'k', tostring(b.k), 'ts', NOW)
    redis.call('PEXPIRE', P .. ':bucket:' .. t, I(math.ceil(b.burst / b.r * 1000) + 1000))
  end
end
if #leases > 0 then bulk('ZADD', LEASED, leases) end
for k = 0, 2 do
  if dr[k] ~= 0 then redis.call('HINCRBY', tierk(TIER[k]), 'r', I(dr[k])) end
  if dl[k] ~= 0 then redis.call('HINCRBY', tierk(TIER[k]), 'l', I(dl[k])) end
end
for t, d in pairs(dt) do redis.call('HINCRBY', tnk(t), 'l', I(d)) end
if got > 0 then redis.call('HINCRBY', N, 'leased', I(got)) end
redis.call('HSET', WRR, '0', I(c[0]), '1', I(c[1]), '2', I(c[2]))
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
-- Leased jobs (nearly all) leave the leased set in one ZREM and their hashes go in one DEL; the counters are
-- added up and written once each.
local seen, unlease, hashes, dtier, dten = {}, {}, {}, {}, {}
local done = 0
for i = 3, #ARGV - 1, 2 do
  local id, att = ARGV[i], ARGV[i + 1]
  local v = nil
  if not seen[id] then v = redis.call('HMGET', jk(id), 's', 'p', 't', 'a') end
  if not v or not v[1] or (att ~= '' and (v[1] ~= 'l' or v[4] ~= att)) then
    out[#out + 1] = 0
  else
    seen[id] = true
    if v[1] == 'l' then
      unlease[#unlease + 1] = id
      dtier[v[3]] = (dtier[v[3]] or 0) - 1
      dten[v[2]] = (dten[v[2]] or 0) - 1
    else
      leave(id, v[1], v[2], v[3])
    end
    hashes[#hashes + 1] = jk(id)
    redis.call('SET', donek(id), '1', 'PX', ARGV[2])
    done = done + 1
    out[#out + 1] = 1
  end
end
if done > 0 then
  bulk('ZREM', LEASED, unlease)
  bulk('DEL', nil, hashes)
  for tier, d in pairs(dtier) do redis.call('HINCRBY', tierk(tier), 'l', I(d)) end
  for t, d in pairs(dten) do redis.call('HINCRBY', tnk(t), 'l', I(d)) end
  redis.call('HINCRBY', N, 'completed', I(done))
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
