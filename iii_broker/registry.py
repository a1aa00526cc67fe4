"""The registry in Redis: workers (with heartbeats), their functions, and triggers.

A function is live while its ``:workers`` set is non-empty. A trigger that app code
declares belongs to the workers that declare it (``NS:trigger:<id>:workers``): it is
active while its function is live and a live worker declares it; when its function's
last worker is gone it stays, inactive, and comes back with a worker declaring it; when
the function has live workers but none declares it any more, it is removed (a deploy
that changed a route never keeps the old one). Engine-owned triggers
(``engine::register_trigger``) belong to no worker and go only when unregistered.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from .store import Keys

# What a worker declares is synced in one script, so a registration, a re-registration
# with fewer functions or triggers (``unregister()`` from code) and a removal all apply the
# same trigger rules atomically. Key names follow :class:`~iii_broker.store.Keys`.
_LIFECYCLE = """
local ns, wid = ARGV[1], ARGV[2]
local worker_key, workers_key, functions_key, triggers_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function fkey(fid, suffix) return ns .. ':function:' .. fid .. suffix end
local function tkey(tid) return ns .. ':trigger:' .. tid .. ':workers' end
local removed_triggers, died = {}, {}

local function drop_trigger(tid, fid)
  redis.call('HDEL', triggers_key, tid)
  redis.call('DEL', tkey(tid))
  redis.call('SREM', fkey(fid, ':triggers'), tid)
  table.insert(removed_triggers, tid)
end

-- This worker no longer declares tid. With no declarer left the trigger is removed when
-- the worker dropped it while alive (unregister()), or when its function still has live
-- workers (they do not declare it); it is kept, inactive, when the worker went away and
-- took the function's last instance with it.
local function release(tid, gone)
  redis.call('SREM', tkey(tid), wid)
  if redis.call('SCARD', tkey(tid)) > 0 then return end
  local entry = redis.call('HGET', triggers_key, tid)
  if not entry then return end
  local fid = cjson.decode(entry)['function_id']
  if not gone or redis.call('SCARD', fkey(fid, ':workers')) > 0 then drop_trigger(tid, fid) end
end

local function leave(fid)
  redis.call('SREM', fkey(fid, ':workers'), wid)
  if redis.call('SCARD', fkey(fid, ':workers')) == 0 then
    redis.call('SREM', functions_key, fid)
    redis.call('DEL', fkey(fid, ''))
    table.insert(died, fid)
  end
end

local old_f, old_t = {}, {}
local raw = redis.call('HGET', worker_key, 'functions')
if raw then for _, f in ipairs(cjson.decode(raw)) do old_f[f] = true end end
raw = redis.call('HGET', worker_key, 'triggers')
if raw then for _, t in ipairs(cjson.decode(raw)) do old_t[t] = true end end

local mode = ARGV[3]
if mode == 'remove' then
  local out = redis.call('HVALS', KEYS[5])
  for fid, _ in pairs(old_f) do leave(fid) end
  for tid, _ in pairs(old_t) do release(tid, true) end
  redis.call('DEL', worker_key, KEYS[5])
  redis.call('ZREM', workers_key, wid)
  table.insert(out, '|')
  for _, fid in ipairs(died) do table.insert(out, fid) end
  table.insert(out, '|')
  for _, tid in ipairs(removed_triggers) do table.insert(out, tid) end
  return out
end

-- mode 'sync': ARGV[4] expiry, ARGV[5] info (a map of strings), ARGV[6] functions
-- [[id, info json]...], ARGV[7] triggers [[id, entry json, function id]...],
-- ARGV[8] and ARGV[9] the JSON lists of function and trigger ids stored on the worker.
local info = cjson.decode(ARGV[5])
for k, v in pairs(info) do redis.call('HSET', worker_key, k, v) end
redis.call('HSET', worker_key, 'functions', ARGV[8], 'triggers', ARGV[9])
redis.call('ZADD', workers_key, ARGV[4], wid)
local new_f, new_t, live = {}, {}, {}
for _, f in ipairs(cjson.decode(ARGV[6])) do
  local fid = f[1]
  new_f[fid] = true
  if redis.call('SISMEMBER', functions_key, fid) == 0 then table.insert(live, fid) end
  redis.call('HSET', fkey(fid, ''), 'info', f[2])
  redis.call('SADD', fkey(fid, ':workers'), wid)
  redis.call('SADD', functions_key, fid)
end
for fid, _ in pairs(old_f) do if not new_f[fid] then leave(fid) end end
for _, t in ipairs(cjson.decode(ARGV[7])) do
  local tid, fid = t[1], t[3]
  new_t[tid] = true
  if redis.call('SISMEMBER', tkey(tid), wid) == 0 or redis.call('HEXISTS', triggers_key, tid) == 0 then
    redis.call('HSET', triggers_key, tid, t[2])
  end
  redis.call('SADD', tkey(tid), wid)
  redis.call('SADD', fkey(fid, ':triggers'), tid)
end
for tid, _ in pairs(old_t) do if not new_t[tid] then release(tid, false) end end
-- Triggers of the functions served here that no live worker declares any more (a route
-- changed across a deploy while the function had no worker) are removed now.
for fid, _ in pairs(new_f) do
  for _, tid in ipairs(redis.call('SMEMBERS', fkey(fid, ':triggers'))) do
    if redis.call('SCARD', tkey(tid)) == 0 then drop_trigger(tid, fid) end
  end
end
local out = live
table.insert(out, '|')
for _, fid in ipairs(died) do table.insert(out, fid) end
table.insert(out, '|')
for _, tid in ipairs(removed_triggers) do table.insert(out, tid) end
return out
"""

# Extends a worker's lease if it is still registered; returns 0 when it was swept.
_HEARTBEAT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[3])
return 1
"""

# Takes or renews the lock when free or already ours; returns 1 when we hold it.
_LOCK = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


TRIGGERS_SCAN_COUNT = 500
"""Triggers read per HSCAN round trip when listing them."""
WORKER_OWNED = "worker"
ENGINE_OWNED = "engine"
STOPPED_MEMORY_MS = 3_600_000
"""How long a call answered ``invocation_stopped`` is remembered (see
:meth:`Registry.note_stopped`); a copy redelivered later is past its deadline anyway."""


def _ms() -> int:
    return int(time.time() * 1000)


def _split(out: list[str], parts: int) -> list[list[str]]:
    """A script's flat reply, split at its ``|`` separators."""
    groups: list[list[str]] = [[]]
    for item in out:
        if item == "|" and len(groups) < parts:
            groups.append([])
        else:
            groups[-1].append(item)
    return groups + [[] for _ in range(parts - len(groups))]


class Registry:
    """Reads and writes the registry keys of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.r: Any = client  # decode_responses=True: every reply is str (redis-py types say otherwise)
        self.ns = namespace
        self.keys = Keys(namespace)
        self._lifecycle = client.register_script(_LIFECYCLE)
        self._beat = client.register_script(_HEARTBEAT)
        self._lock = client.register_script(_LOCK)

    # -- writing --------------------------------------------------------------------

    def register_worker(
        self, worker: dict[str, Any], functions: list[dict[str, Any]],
        triggers: list[dict[str, Any]], ttl_ms: int,
    ) -> list[str]:
        """Record what a worker serves and declares now (again after a change: functions
        and triggers it no longer has are let go, see :data:`_LIFECYCLE`); returns the
        functions that became live."""
        wid = worker["id"]
        now = _ms()
        info = {k: json.dumps(v) for k, v in worker.items()}
        info.update(registered_at=str(now), last_heartbeat=str(now))
        fids = [f["function_id"] for f in functions]
        entries = [[t["id"], json.dumps(dict(t, owner=WORKER_OWNED, registered_by=wid,
                                             registered_at=now)), t["function_id"]]
                   for t in triggers]
        out = self._lifecycle(
            keys=[self.keys.worker(wid), self.keys.workers, self.keys.functions,
                  self.keys.triggers],
            args=[self.ns, wid, "sync", now + ttl_ms, json.dumps(info),
                  json.dumps([[f["function_id"], json.dumps(f)] for f in functions]),
                  json.dumps(entries), json.dumps(fids), json.dumps([t["id"] for t in triggers])])
        became_live, died, removed = _split(out, 3)
        self.announce("worker_registered", worker_id=wid, functions=became_live)
        if died or removed:  # this worker dropped functions or triggers (unregister())
            self.announce("worker_changed", worker_id=wid, functions_removed=died,
                          triggers_removed=removed)
        return became_live

    def heartbeat(self, worker_id: str, ttl_ms: int) -> bool:
        """Extend the worker's lease; False when it was already swept (it must re-register)."""
        now = _ms()
        return bool(self._beat(keys=[self.keys.worker(worker_id), self.keys.workers],
                               args=[now + ttl_ms, worker_id, now]))

    def remove_worker(self, worker_id: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Remove a worker; returns its in-flight calls and the functions that died with it.
        Triggers only it declared are removed, or kept inactive when their function died."""
        out = self._lifecycle(
            keys=[self.keys.worker(worker_id), self.keys.workers, self.keys.functions,
                  self.keys.triggers, self.keys.inflight(worker_id)],
            args=[self.ns, worker_id, "remove"])
        inflight, died, removed = _split(out, 3)
        self.announce("worker_removed", worker_id=worker_id, functions=died)
        if removed:
            self.announce("triggers_removed", worker_id=worker_id, triggers=removed)
        return [json.loads(x) for x in inflight], died

    def add_engine_trigger(self, trigger: dict[str, Any]) -> bool:
        """Record a trigger no worker owns (``engine::register_trigger``); False if it was
        there already."""
        entry = dict(trigger, owner=ENGINE_OWNED, registered_by="engine", registered_at=_ms())
        added = bool(self.r.hsetnx(self.keys.triggers, trigger["id"], json.dumps(entry)))
        if added:
            self.announce("trigger_registered", trigger_id=trigger["id"])
        return added

    def trigger(self, trigger_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.triggers, trigger_id)
        return json.loads(raw) if raw else None

    def remove_trigger(self, trigger_id: str) -> bool:
        """Forget a trigger for good; True if it existed."""
        entry = self.trigger(trigger_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self.keys.triggers, trigger_id)
        pipe.delete(self.keys.trigger_workers(trigger_id))
        if entry is not None:
            pipe.srem(self.keys.function_triggers(entry["function_id"]), trigger_id)
        gone = bool(pipe.execute()[0])
        if gone:
            self.announce("trigger_removed", trigger_id=trigger_id)
        return gone

    def expired_workers(self) -> list[str]:
        return list(self.r.zrangebyscore(self.keys.workers, "-inf", _ms()))

    def acquire(self, lock_key: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew an election lock; True while ``owner`` holds it."""
        return bool(self._lock(keys=[lock_key], args=[owner, ttl_ms]))

    def release(self, lock_key: str, owner: str) -> None:
        if self.r.get(lock_key) == owner:
            self.r.delete(lock_key)

    def announce(self, event: str, **data: Any) -> None:
        """Publish a registry change on the events channel (web processes listen)."""
        self.r.publish(self.keys.events, json.dumps({"event": event, **data}))

    # -- reading --------------------------------------------------------------------

    def live_functions(self) -> set[str]:
        return set(self.r.smembers(self.keys.functions))

    def functions(self) -> list[dict[str, Any]]:
        fids = sorted(self.live_functions())
        pipe = self.r.pipeline(transaction=False)
        for fid in fids:
            pipe.hget(self.keys.function(fid), "info")
            pipe.smembers(self.keys.function_workers(fid))
        res = pipe.execute()
        out = []
        for i, fid in enumerate(fids):
            info = json.loads(res[2 * i] or "{}") or {"function_id": fid}
            info["workers"] = sorted(res[2 * i + 1])
            out.append(info)
        return out

    def workers(self) -> list[dict[str, Any]]:
        ids = self.r.zrange(self.keys.workers, 0, -1, withscores=True)
        pipe = self.r.pipeline(transaction=False)
        for wid, _ in ids:
            pipe.hgetall(self.keys.worker(wid))
            pipe.hlen(self.keys.inflight(wid))
        res = pipe.execute()
        now = _ms()
        out = []
        for i, (wid, expiry) in enumerate(ids):
            raw = res[2 * i]
            if not raw:
                continue
            info: dict[str, Any] = {}
            for key, value in raw.items():
                try:
                    info[key] = json.loads(value)
                except ValueError:
                    info[key] = value
            info["id"] = wid
            info["alive"] = expiry > now
            info["in_flight"] = res[2 * i + 1]
            out.append(info)
        return out

    # -- custom trigger types -------------------------------------------------------

    def provide_types(self, worker_id: str, types: list[dict[str, Any]],
                      dropped: list[str]) -> None:
        """Record the custom trigger types a worker provides now (and those it stopped
        providing)."""
        pipe = self.r.pipeline(transaction=True)
        for t in types:
            pipe.hset(self.keys.trigger_types, t["id"], json.dumps(
                {"id": t["id"], "description": t.get("description") or ""}))
            pipe.sadd(self.keys.trigger_type_providers(t["id"]), worker_id)
        for type_id in dropped:
            pipe.srem(self.keys.trigger_type_providers(type_id), worker_id)
        pipe.execute()

    def note_custom_type(self, type_id: str) -> None:
        """A trigger of a type no module declares was recorded: the type is known (pending
        until a worker provides it)."""
        self.r.hsetnx(self.keys.trigger_types, type_id,
                      json.dumps({"id": type_id, "description": ""}))

    def custom_types(self) -> dict[str, dict[str, Any]]:
        """Custom trigger types, each with ``providers``: the live workers providing it
        (oldest registration first: the first one is handed the type's triggers)."""
        types = {k: json.loads(v) for k, v in self.r.hgetall(self.keys.trigger_types).items()}
        if not types:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for type_id in types:
            pipe.smembers(self.keys.trigger_type_providers(type_id))
        members = pipe.execute()
        candidates = sorted({w for m in members for w in m})
        alive: dict[str, float] = {}
        if candidates:
            pipe = self.r.pipeline(transaction=False)
            for w in candidates:
                pipe.zscore(self.keys.workers, w)
            now = _ms()
            alive = {w: score for w, score in zip(candidates, pipe.execute(), strict=True)
                     if score is not None and score > now}
        for (_type_id, info), providers in zip(types.items(), members, strict=True):
            info["providers"] = sorted((w for w in providers if w in alive),
                                       key=lambda w: (alive[w], w))
        return types

    def trigger_errors(self) -> dict[str, str]:
        return dict(self.r.hgetall(self.keys.trigger_errors))

    def note_trigger_error(self, trigger_id: str, message: str | None) -> None:
        """A provider refused a trigger (``message``), or took it (None)."""
        if message is None:
            self.r.hdel(self.keys.trigger_errors, trigger_id)
        else:
            self.r.hset(self.keys.trigger_errors, trigger_id, message)

    def triggers(self) -> list[dict[str, Any]]:
        """Every trigger, ``active`` while its function is live and (unless the engine owns
        it) a live worker declares it — and, for a custom type, a live worker provides the
        type (else it is ``pending``)."""
        # HSCAN, not HGETALL: with thousands of triggers (cron schedules) one HGETALL holds
        # Redis for milliseconds; a small hash still comes back in one reply.
        raw = dict(self.r.hscan_iter(self.keys.triggers, count=TRIGGERS_SCAN_COUNT))
        live = self.r.smembers(self.keys.functions)
        entries = [json.loads(value) for value in raw.values()]
        pipe = self.r.pipeline(transaction=False)
        for t in entries:
            pipe.scard(self.keys.trigger_workers(t["id"]))
        declared = pipe.execute() if entries else []
        custom = self.custom_types() if entries else {}
        errors = self.trigger_errors() if custom else {}
        for t, count in zip(entries, declared, strict=True):
            t.setdefault("owner", WORKER_OWNED)
            t["active"] = t["function_id"] in live and (t["owner"] == ENGINE_OWNED or count > 0)
            provided = custom.get(t["type"])
            if provided is not None and not provided["providers"]:
                t["active"] = False
                t["pending"] = f"no live worker provides trigger type {t['type']!r}"
            if provided is not None and t["id"] in errors:
                t["error"] = errors[t["id"]]  # its provider refused it
                t["active"] = False
        return sorted(entries, key=lambda t: (t["function_id"], t["type"], t["id"]))

    def function_live(self, function_id: str) -> bool:
        """True while at least one worker serves ``function_id``."""
        return bool(self.r.sismember(self.keys.functions, function_id))

    def note_orphaned(self, function_ids: list[str], for_ms: int) -> None:
        """Remember functions that just lost their last worker for ``for_ms``: the elected
        engine answers calls still queued for them meanwhile (a caller may have published
        one on the strength of its cached "alive")."""
        if function_ids:
            until = _ms() + for_ms
            self.r.zadd(self.keys.orphaned, dict.fromkeys(function_ids, until))

    def orphaned(self) -> list[str]:
        """The functions noted by :meth:`note_orphaned` whose window is still open (the
        closed ones are forgotten)."""
        now = _ms()
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(self.keys.orphaned, "-inf", now)
        pipe.zrange(self.keys.orphaned, 0, -1)
        return list(pipe.execute()[1])

    def note_stopped(self, invocation_ids: list[str], for_ms: int = STOPPED_MEMORY_MS) -> None:
        """Remember calls whose callers were answered ``invocation_stopped`` (their worker
        lapsed), so that a copy the broker redelivers later is not run again."""
        if invocation_ids:
            pipe = self.r.pipeline(transaction=False)
            for invocation_id in invocation_ids:
                pipe.set(self.keys.stopped(invocation_id), 1, px=for_ms)
            pipe.execute()

    def was_stopped(self, invocation_id: str) -> bool:
        return bool(self.r.exists(self.keys.stopped(invocation_id)))

    def worker_field(self, worker_id: str, name: str) -> Any:
        """One field of a worker's entry, decoded (None when absent)."""
        raw = self.r.hget(self.keys.worker(worker_id), name)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def worker_exists(self, worker_id: str) -> bool:
        return bool(self.r.exists(self.keys.worker(worker_id)))
