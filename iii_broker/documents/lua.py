"""The one Lua script behind every state and stream write.

A write, the change record that state and stream triggers read, and the live message that
stream processes fan out happen in one script, so no process can crash between them and no
reader sees one without the others.

Keys: ``KEYS[1]`` the collection's HASH (key -> packed value), ``KEYS[2]`` the SET of
collection names it joins while it has items (``member`` in ARGV), ``KEYS[3]`` the STREAM of
change records (or an unused name when ``maxlen`` is 0), ``KEYS[4]`` the pub/sub channel for
live messages (or an unused name when ``live`` is 0).

ARGV: ``cmd`` (``set`` | ``delete`` | ``update``), ``field``, ``arg`` (the packed value for
``set``; the ops as JSON for ``update``, their values packed), ``max_bytes``, ``maxlen``
(change records kept, approximately; 0: none written), ``meta`` (JSON object copied into
each record and live message), ``member``, ``live`` (1: publish).

Returns ``{old or false, new or false, errors JSON, event or ''}``; ``event`` is
``created``, ``updated`` or ``deleted``, empty when nothing changed. A value over
``max_bytes`` returns ``{'too_large', size}`` and writes nothing.

Change record fields: ``meta``, ``key``, ``event``, ``old`` (packed, '' if none), ``new``
(packed, '' if none), ``ts`` (Unix ms, the Redis server's clock). Live message:
``{"m": meta, "k": key, "e": event, "ts": ms}`` + newline + the new value (the old one for
``deleted``).
"""

from __future__ import annotations

WRITE = r"""
local cmd, field, arg = ARGV[1], ARGV[2], ARGV[3]
local max_bytes, maxlen = tonumber(ARGV[4]), tonumber(ARGV[5])
local meta, member, live = ARGV[6], ARGV[7], ARGV[8]
local NUM, ESC, ARR = '\0n', '\0s', '\0a'
local null = cjson.null

local function kind(v)
  local t = type(v)
  if t == 'table' then
    if v[ARR] ~= nil then return 'array' end
    return 'object'
  elseif t == 'string' then
    if string.byte(v, 1) == 0 and string.sub(v, 2, 2) == 'n' then return 'number' end
    return 'string'
  elseif t == 'boolean' then return 'boolean' end
  return 'null'
end

-- A packed string's text (a NUL-led one is escaped).
local function text(v)
  if string.byte(v, 1) == 0 then return string.sub(v, 3) end
  return v
end
local function str(s)
  if string.byte(s, 1) == 0 then return ESC .. s end
  return s
end

local function arr(v)
  local items = v[ARR]
  if type(items) ~= 'table' then items = {}; v[ARR] = items end
  return items
end

-- An array index from a path segment: a number, or a string of digits.
local function index(seg)
  if type(seg) == 'number' then return seg end
  if type(seg) == 'string' and string.match(seg, '^%d+$') then return tonumber(seg) end
  return nil
end

local function child(v, seg)
  local k = kind(v)
  if k == 'object' then
    if type(seg) == 'number' then seg = string.format('%d', seg) end
    return v[seg]
  elseif k == 'array' then
    local i = index(seg)
    if i == nil then return nil end
    return arr(v)[i + 1]
  end
  return nil
end

local function fail(code, message) error({code = code, message = message}) end

local function where(path, n)
  local parts = {}
  for i = 1, n do parts[#parts + 1] = tostring(path[i]) end
  if #parts == 0 then return 'the root' end
  return "'" .. table.concat(parts, '.') .. "'"
end

-- The container holding path's last segment, creating objects on the way when asked.
-- `holder` wraps the document as holder.v so the root has a parent too.
local function parent_of(holder, path, op, create)
  local cur, seg = holder, 'v'
  for i = 1, #path do
    local nxt = child(cur, seg)
    if nxt == nil or nxt == null then
      if not create then return nil end
      nxt = {}
      local k = kind(cur)
      if k == 'object' then
        if type(seg) == 'number' then seg = string.format('%d', seg) end
        cur[seg] = nxt
      else
        local items, i0 = arr(cur), index(seg)
        if i0 == nil or i0 > #items then
          fail(op .. '.path_conflict',
               'index ' .. tostring(seg) .. ' is past the end of the array at ' .. where(path, i - 1))
        end
        items[i0 + 1] = nxt
      end
    elseif kind(nxt) ~= 'object' and kind(nxt) ~= 'array' then
      fail(op .. '.path_conflict', where(path, i - 1) .. ' is a ' .. kind(nxt) .. ', not an object or array')
    end
    cur, seg = nxt, path[i]
  end
  return cur, seg
end

local function put(container, seg, value, op, path)
  local k = kind(container)
  if k == 'object' then
    if type(seg) == 'number' then seg = string.format('%d', seg) end
    container[seg] = value
    return
  end
  local items, i = arr(container), index(seg)
  if i == nil then
    fail(op .. '.path_conflict', where(path, #path) .. ' names a key in an array')
  elseif i <= #items then items[i + 1] = value
  else
    fail(op .. '.path_conflict', 'index ' .. i .. ' is past the end of the array (length ' .. #items .. ')')
  end
end

local function read(holder, path)
  local parent, seg = parent_of(holder, path, 'read', false)
  if parent == nil then return nil end
  return child(parent, seg)
end

local function is_int(s)
  return not string.find(s, '[%.eEnN]')
end

local function add(current, by, op)
  if by == nil then by = NUM .. '1' end
  if kind(by) ~= 'number' then fail(op .. '.invalid_by', "'by' must be a number") end
  local base = NUM .. '0'
  if current ~= nil and current ~= null then
    if kind(current) ~= 'number' then
      fail(op .. '.not_number', 'the value is a ' .. kind(current) .. ', not a number')
    end
    base = current
  end
  local a, b = string.sub(base, 3), string.sub(by, 3)
  local x, y = tonumber(a), tonumber(b)
  if op == 'decrement' then y = -y end
  local r = x + y
  if r ~= r or r == math.huge or r == -math.huge then
    fail(op .. '.overflow', 'the result is not a finite number')
  end
  if is_int(a) and is_int(b) then
    local m = 9007199254740992
    if math.abs(x) > m or math.abs(y) > m or math.abs(r) > m then
      fail(op .. '.out_of_range', 'integers past 2^53 cannot be added exactly')
    end
    return NUM .. string.format('%.0f', r)
  end
  local s = string.format('%.17g', r)
  if not string.find(s, '[%.eE]') then s = s .. '.0' end
  return NUM .. s
end

local ops_impl = {}
ops_impl.set = function(holder, path, op)
  local parent, seg = parent_of(holder, path, 'set', true)
  put(parent, seg, op.value == nil and null or op.value, 'set', path)
end
ops_impl.merge = function(holder, path, op)
  local value = op.value
  if kind(value) ~= 'object' then fail('merge.type_mismatch', "'value' must be an object") end
  local parent, seg = parent_of(holder, path, 'merge', true)
  local target = child(parent, seg)
  if target == nil or target == null then
    target = {}
    put(parent, seg, target, 'merge', path)
  elseif kind(target) ~= 'object' then
    fail('merge.type_mismatch', where(path, #path) .. ' is a ' .. kind(target) .. ', not an object')
  end
  for k, v in pairs(value) do target[k] = v end
end
local function bump(name)
  return function(holder, path, op)
    local parent, seg = parent_of(holder, path, name, true)
    put(parent, seg, add(child(parent, seg), op.by, name), name, path)
  end
end
ops_impl.increment = bump('increment')
ops_impl.decrement = bump('decrement')
ops_impl.append = function(holder, path, op)
  local value = op.value
  if value == nil then value = null end
  local parent, seg = parent_of(holder, path, 'append', true)
  local target = child(parent, seg)
  if target == nil or target == null then
    put(parent, seg, {[ARR] = {value}}, 'append', path)
  elseif kind(target) == 'array' then
    local items = arr(target)
    items[#items + 1] = value
  elseif kind(target) == 'string' and kind(value) == 'string' then
    put(parent, seg, str(text(target) .. text(value)), 'append', path)
  else
    fail('append.type_mismatch', 'cannot append a ' .. kind(value) .. ' to a ' .. kind(target))
  end
end
ops_impl.remove = function(holder, path, op)
  if #path == 0 then holder.v = null; return end
  local parent, seg = parent_of(holder, path, 'remove', false)
  if parent == nil then return end
  local k = kind(parent)
  if k == 'object' then
    if type(seg) == 'number' then seg = string.format('%d', seg) end
    parent[seg] = nil
  elseif k == 'array' then
    local items, i = arr(parent), index(seg)
    if i ~= nil and i < #items then table.remove(items, i + 1) end
  end
end

local old = redis.call('HGET', KEYS[1], field)
local new, errors = nil, {}
if cmd == 'set' then
  new = arg
elseif cmd == 'update' then
  local holder = {v = null}
  if old then holder.v = cjson.decode(old) end
  local ops = cjson.decode(arg)
  local applied = 0
  for _, op in ipairs(ops) do
    local impl = ops_impl[op.type]
    local ok, err = pcall(impl, holder, op.path, op)
    if ok then
      applied = applied + 1
    else
      if type(err) ~= 'table' then err = {code = op.type .. '.failed', message = tostring(err)} end
      errors[#errors + 1] = {op_index = op.index, code = err.code, message = err.message}
    end
  end
  if applied > 0 then new = cjson.encode(holder.v) end
end

local event = ''
if cmd == 'delete' then
  if old then
    redis.call('HDEL', KEYS[1], field)
    if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], member) end
    event = 'deleted'
  end
elseif new then
  if #new > max_bytes then return {'too_large', #new} end
  redis.call('HSET', KEYS[1], field, new)
  redis.call('SADD', KEYS[2], member)
  if old then event = 'updated' else event = 'created' end
end

if event ~= '' then
  local t = redis.call('TIME')
  local ts = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  if maxlen > 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'meta', meta, 'key', field,
               'event', event, 'old', old or '', 'new', new or '', 'ts', ts)
  end
  if live == '1' then
    local header = cjson.encode({m = cjson.decode(meta), k = field, e = event, ts = tonumber(ts)})
    local body = new
    if event == 'deleted' then body = old end
    redis.call('PUBLISH', KEYS[4], header .. '\n' .. body)
  end
end
local errs = '[]'
if #errors > 0 then errs = cjson.encode(errors) end
return {old or false, new or false, errs, event}
"""
