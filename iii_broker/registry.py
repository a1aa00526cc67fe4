"""The registry in Redis: workers (with heartbeats), their functions, and triggers.

A function is live while its ``:workers`` set is non-empty. Removing a worker
removes functions it was the last to serve; their triggers stay in the trigger
hash, inactive, and become active again when a worker registers the function.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from ..store import Keys

# Removes a worker atomically and returns [in-flight entries..., "|", removed functions...].
_REMOVE_WORKER = """
local worker_key, inflight_key, workers_key, functions_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ns, worker_id = ARGV[1], ARGV[2]
local out = redis.call('HVALS', inflight_key)
table.insert(out, '|')
local raw = redis.call('HGET', worker_key, 'functions')
if raw then
  for _, fid in ipairs(cjson.decode(raw)) do
    local set_key = ns .. ':function:' .. fid .. ':workers'
    redis.call('SREM', set_key, worker_id)
    if redis.call('SCARD', set_key) == 0 then
      redis.call('SREM', functions_key, fid)
      redis.call('DEL', ns .. ':function:' .. fid)
      table.insert(out, fid)
    end
  end
end
redis.call('DEL', worker_key, inflight_key)
redis.call('ZREM', workers_key, worker_id)
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


def _ms() -> int:
    return int(time.time() * 1000)


class Registry:
    """Reads and writes the registry keys of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.r: Any = client  # decode_responses=True: every reply is str (redis-py types say otherwise)
        self.ns = namespace
        self.keys = Keys(namespace)
        self._remove = client.register_script(_REMOVE_WORKER)
        self._beat = client.register_script(_HEARTBEAT)
        self._lock = client.register_script(_LOCK)

    # -- writing --------------------------------------------------------------------

    def register_worker(
        self, worker: dict[str, Any], functions: list[dict[str, Any]],
        triggers: list[dict[str, Any]], ttl_ms: int,
    ) -> list[str]:
        """Record a worker, its functions and triggers; returns functions that became live."""
        wid = worker["id"]
        fids = [f["function_id"] for f in functions]
        was_live = [bool(x) for x in self.r.smismember(self.keys.functions, fids)] if fids else []
        now = _ms()
        pipe = self.r.pipeline(transaction=True)
        info = {k: json.dumps(v) for k, v in worker.items()}
        info.update(functions=json.dumps(fids), registered_at=str(now), last_heartbeat=str(now))
        pipe.hset(self.keys.worker(wid), mapping=info)
        pipe.zadd(self.keys.workers, {wid: now + ttl_ms})
        for f in functions:
            fid = f["function_id"]
            pipe.hset(self.keys.function(fid), mapping={"info": json.dumps(f)})
            pipe.sadd(self.keys.function_workers(fid), wid)
            pipe.sadd(self.keys.functions, fid)
        for t in triggers:
            entry = dict(t, registered_by=wid, registered_at=now)
            pipe.hset(self.keys.triggers, t["id"], json.dumps(entry))
        pipe.execute()
        became_live = [fid for fid, live in zip(fids, was_live, strict=True) if not live]
        self.announce("worker_registered", worker_id=wid, functions=became_live)
        return became_live

    def heartbeat(self, worker_id: str, ttl_ms: int) -> bool:
        """Extend the worker's lease; False when it was already swept (it must re-register)."""
        now = _ms()
        return bool(self._beat(keys=[self.keys.worker(worker_id), self.keys.workers],
                               args=[now + ttl_ms, worker_id, now]))

    def remove_worker(self, worker_id: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Remove a worker; returns its in-flight calls and the functions that died with it."""
        out = self._remove(
            keys=[self.keys.worker(worker_id), self.keys.inflight(worker_id),
                  self.keys.workers, self.keys.functions],
            args=[self.ns, worker_id],
        )
        split = out.index("|")
        inflight = [json.loads(x) for x in out[:split]]
        removed = list(out[split + 1:])
        self.announce("worker_removed", worker_id=worker_id, functions=removed)
        return inflight, removed

    def remove_trigger(self, trigger_id: str) -> bool:
        """Forget a trigger for good; True if it existed."""
        gone = bool(self.r.hdel(self.keys.triggers, trigger_id))
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

    def triggers(self) -> list[dict[str, Any]]:
        raw = self.r.hgetall(self.keys.triggers)
        live = self.live_functions()
        out = []
        for value in raw.values():
            t = json.loads(value)
            t["active"] = t["function_id"] in live
            out.append(t)
        return sorted(out, key=lambda t: (t["function_id"], t["type"], t["id"]))

    def worker_exists(self, worker_id: str) -> bool:
        return bool(self.r.exists(self.keys.worker(worker_id)))
