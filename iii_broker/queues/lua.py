"""The Lua scripts behind durable queues: every state change is one atomic script.

Keys (``P`` is the namespace; ``Q`` a queue, ``F`` a function id, ``G`` a FIFO group):

- ``P.fn.F.q.Q``       LIST   standard jobs of F in Q (Kombu messages; LPUSH in, RPOP out)
- ``P:q:Q:g:G``        LIST   one FIFO group's jobs, ``F\\n<message>``; the head is the current job
- ``P:q:Q:ready:F``    LIST   FIFO groups whose head (a job of F) may run now
- ``P:q:Q:active``     SET    FIFO groups that have jobs
- ``P:q:Q:running``    STRING jobs of Q claimed by workers and not yet settled (the cap)
- ``P:q:Q:delayed``    ZSET   retries, scored by due time (ms)
- ``P:q:Q:dlq``        HASH   dead letters: message id -> record (JSON)
- ``P:q:Q:dlq:index``  ZSET   dead letters by the time they died (ms)
- ``P:q:Q:functions``  SET    functions that have had jobs in Q
- ``P:q:Q:stats``      HASH   enqueued, completed, retried, dead counters
- ``P:q:Q:idem:K``     STRING message id of the job enqueued with idempotency key K (TTL)
- ``P:worker:W:jobs``  HASH   jobs worker W has claimed: tag -> ``{q,f,g,at}\\n<message>``
- ``P:jobholders``     SET    workers that may hold claimed jobs (the sweeper checks them)
- ``P:q:Q:redeliveries:ID`` STRING times RabbitMQ redelivered job ID (counts attempts of jobs
                       whose worker died; RabbitMQ brokers only)
- ``P:wake:F``         LIST   at most one token: "a job of F may be waiting" (workers BLPOP it)
"""

from __future__ import annotations

_COMMON = r"""
local P = ARGV[1]
local function qk(q, s) return P .. ':q:' .. q .. ':' .. s end
local function flist(f, q) return P .. '.fn.' .. f .. '.q.' .. q end
local function wake(f)
  local k = P .. ':wake:' .. f
  redis.call('LPUSH', k, '1')
  redis.call('LTRIM', k, 0, 0)
end
local function split(s)
  local nl = string.find(s, '\n', 1, true)
  return string.sub(s, 1, nl - 1), string.sub(s, nl + 1)
end
-- The head of FIFO group g finished (done or dead): let the group's next job run.
local function advance(q, g)
  local gk = qk(q, 'g:' .. g)
  redis.call('LPOP', gk)
  local nxt = redis.call('LINDEX', gk, 0)
  if nxt then
    local f = split(nxt)
    redis.call('RPUSH', qk(q, 'ready:' .. f), g)
    wake(f)
  else
    redis.call('SREM', qk(q, 'active'), g)
  end
end
-- Put one job on its queue: LPUSH for standard, the group's tail for FIFO.
-- An empty raw only counts the job: the broker (RabbitMQ) holds it.
local function push(q, f, raw, g)
  redis.call('SADD', qk(q, 'functions'), f)
  redis.call('HINCRBY', qk(q, 'stats'), 'enqueued', 1)
  if raw == '' then return end
  if g ~= '' then
    redis.call('RPUSH', qk(q, 'g:' .. g), f .. '\n' .. raw)
    if redis.call('SADD', qk(q, 'active'), g) == 1 then
      redis.call('RPUSH', qk(q, 'ready:' .. f), g)
    end
  else
    redis.call('LPUSH', flist(f, q), raw)
  end
  wake(f)
end
"""

# ARGV: P, idempotency key ('' for none), ttl ms, message id, n, then n x (q, f, raw, group).
# Returns {1, id} when enqueued, {0, first id} when the key was seen within its TTL.
ENQUEUE = _COMMON + r"""
local key, ttl, id, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if key ~= '' then
  local seen = redis.call('GET', key)
  if seen then return {0, seen} end
  redis.call('SET', key, id, 'PX', ttl)
end
for i = 0, n - 1 do
  local b = 6 + i * 4
  push(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3])
end
return {1, id}
"""

# Settle finished jobs of one worker, then claim up to n new ones for it.
# ARGV: P, jobs key, holders key, worker id, now ms, tag prefix, n,
#       nout, nout x (kind, tag, a, b),
#       ncand, ncand x (q, f, cap, 's'|'f').
# kind 'ok'; 'retry' (a = due ms, b = the message with its attempt raised);
# 'dead' (a = message id, b = dead-letter record JSON); 'release' (forget the claim only).
# Returns {capped, tag1, raw1, q1, tag2, ...}: capped is 1 when a cap kept work waiting.
CYCLE = _COMMON + r"""
local jobs, holders, wid, now, prefix = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local n, nout = tonumber(ARGV[7]), tonumber(ARGV[8])
local settled = 0
for i = 0, nout - 1 do
  local b = 9 + i * 4
  local kind, tag, a, bb = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local rec = redis.call('HGET', jobs, tag)
  if rec then
    redis.call('HDEL', jobs, tag)
    local head = split(rec)
    local h = cjson.decode(head)
    local q, f, g = h.q, h.f, h.g
    local running = qk(q, 'running')
    if redis.call('DECR', running) < 0 then redis.call('SET', running, 0) end
    if kind == 'ok' then
      redis.call('HINCRBY', qk(q, 'stats'), 'completed', 1)
      if g then advance(q, g) end
    elseif kind == 'retry' then
      redis.call('HINCRBY', qk(q, 'stats'), 'retried', 1)
      if g then
        redis.call('LSET', qk(q, 'g:' .. g), 0, f .. '\n' .. bb)
        redis.call('ZADD', qk(q, 'delayed'), a, cjson.encode({f = f, g = g, t = tag}))
      else
        redis.call('ZADD', qk(q, 'delayed'), a, cjson.encode({f = f, t = tag}) .. '\n' .. bb)
      end
    elseif kind == 'release' then
      -- a RabbitMQ job of a dead worker: the broker redelivers it, only the cap is freed
    else
      redis.call('HINCRBY', qk(q, 'stats'), 'dead', 1)
      redis.call('HSET', qk(q, 'dlq'), a, bb)
      redis.call('ZADD', qk(q, 'dlq:index'), now, a)
      if g then advance(q, g) end
    end
    settled = settled + 1
  end
end
local base = 9 + nout * 4
local ncand = tonumber(ARGV[base])
local out = {0}
local claimed = 0
for i = 0, ncand - 1 do
  local c = base + 1 + i * 4
  local q, f, cap, fifo = ARGV[c], ARGV[c + 1], tonumber(ARGV[c + 2]), ARGV[c + 3] == 'f'
  local source = fifo and qk(q, 'ready:' .. f) or flist(f, q)
  if claimed >= n then
    if n > 0 and redis.call('LLEN', source) > 0 then wake(f) end  -- let an idle worker take it
  else
    local rk = qk(q, 'running')
    local running = tonumber(redis.call('GET', rk) or '0')
    while claimed < n do
      if running >= cap then
        if redis.call('LLEN', source) > 0 then out[1] = 1 end
        break
      end
      local raw, g
      if fifo then
        g = redis.call('LPOP', source)
        if not g then break end
        local item = redis.call('LINDEX', qk(q, 'g:' .. g), 0)
        if item then
          local _
          _, raw = split(item)
        else
          redis.call('SREM', qk(q, 'active'), g)  -- an empty group left ready: forget it
        end
      else
        raw = redis.call('RPOP', source)
        if not raw then break end
      end
      if raw then
        claimed = claimed + 1
        local tag = prefix .. claimed
        local h = {q = q, f = f, at = now}
        if g then h.g = g end
        redis.call('HSET', jobs, tag, cjson.encode(h) .. '\n' .. raw)
        redis.call('INCR', rk)
        running = running + 1
        table.insert(out, tag)
        table.insert(out, raw)
        table.insert(out, q)
      end
    end
  end
end
if claimed > 0 then redis.call('SADD', holders, wid) end
return out
"""

# Move due retries back onto their queues. ARGV: P, now ms, limit, broker ('redis' or
# 'amqp'), then queue names. With 'amqp', due standard jobs are not moved but returned
# (the caller publishes them, then removes them from the delayed set).
# Returns {moved, next due ms or -1, q1, member1, q2, member2, ...}.
PROMOTE = _COMMON + r"""
local now, limit, amqp = ARGV[2], tonumber(ARGV[3]), ARGV[4] == 'amqp'
local moved, nxt = 0, -1
local out = {}
for i = 5, #ARGV do
  local q = ARGV[i]
  local dk = qk(q, 'delayed')
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(due) do
    local nl = string.find(m, '\n', 1, true)
    if nl and amqp then
      table.insert(out, q)
      table.insert(out, m)
    else
      if nl then
        local h = cjson.decode(string.sub(m, 1, nl - 1))
        redis.call('RPUSH', flist(h.f, q), string.sub(m, nl + 1))
        wake(h.f)
      else
        local h = cjson.decode(m)
        redis.call('RPUSH', qk(q, 'ready:' .. h.f), h.g)
        wake(h.f)
      end
      redis.call('ZREM', dk, m)
      moved = moved + 1
    end
  end
  local first = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
  if first[2] then
    local s = tonumber(first[2])
    if nxt < 0 or s < nxt then nxt = s end
  end
end
local res = {moved, nxt}
for _, v in ipairs(out) do table.insert(res, v) end
return res
"""

# Claim one job RabbitMQ delivered, if its queue's cap allows.
# ARGV: P, jobs key, holders key, worker id, now, tag, q, f, cap, raw. Returns 1 or 0.
ACQUIRE = _COMMON + r"""
local jobs, holders, wid, now, tag, q, f = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local cap, raw = tonumber(ARGV[9]), ARGV[10]
local rk = qk(q, 'running')
if tonumber(redis.call('GET', rk) or '0') >= cap then return 0 end
redis.call('INCR', rk)
redis.call('HSET', jobs, tag, cjson.encode({q = q, f = f, at = tonumber(now), amqp = 1}) .. '\n' .. raw)
redis.call('SADD', holders, wid)
return 1
"""

# Put dead letters back on their queue, attempts reset. ARGV: P, q, n, n x (id, f, raw, group).
# A letter already gone (redriven or discarded by someone else) is skipped.
# Returns the ids redriven.
REDRIVE = _COMMON + r"""
local q, n = ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 4
  local id = ARGV[b]
  if redis.call('HDEL', qk(q, 'dlq'), id) == 1 then
    redis.call('ZREM', qk(q, 'dlq:index'), id)
    push(q, ARGV[b + 1], ARGV[b + 2], ARGV[b + 3])
    table.insert(out, id)
  end
end
return out
"""
