"""What the cron tests share: beats and cron workers as real processes, and the fires the
test app records on ``NS:test:fires``."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

from iii_broker.modules.cron.entries import CRON
from tests.helpers import Proc, bin_cmd, wait_for

FAST = "[modules.cron]\nlock_timeout_s = 2\n"
"""Settings for the engine and every beat: a standby takes over 2 s after the leader died."""
CRON_APP = "tests.apps.cron_app"


def config_path(cluster: Any, text: str) -> str:
    path = cluster.log_dir / f"iii-{time.monotonic_ns()}.toml"
    path.write_text(text)
    return str(path)


def beat(cluster: Any, config: str | None = FAST, wait: bool = True) -> Proc:
    """Start ``iii-broker beat`` (with ``config`` as its settings file); with ``wait``, until
    it has logged that it is starting."""
    extra = {"III_CONFIG_PATH": config_path(cluster, config)} if config is not None else {}
    proc = cluster.spawn("beat", bin_cmd("iii-broker", "beat"), **extra)
    if wait:
        wait_for(lambda: _alive(proc) and "starting" in proc.output(), timeout=15,
                 what=f"beat pid {proc.pid} to start")
    return proc


def _alive(proc: Proc) -> bool:
    assert proc.popen.poll() is None, f"{proc.name} exited early:\n{proc.output()}"
    return True


def engine(cluster: Any, config: str = FAST) -> Proc:
    return cluster.engine(config=config)


def cron_worker(cluster: Any, *triggers: tuple[str, dict[str, Any]], **env: str) -> Proc:
    """A worker of the cron test app declaring ``triggers`` ((function_id, config) pairs)."""
    spec = [{"function_id": fn, "config": config} for fn, config in triggers]
    return cluster.worker(CRON_APP, III_TEST_CRON_TRIGGERS=json.dumps(spec), **env)


def fires(store: Any, settings: Any, fn: str | None = None) -> list[dict[str, Any]]:
    """Every run the test app recorded (of ``fn`` when given), oldest first."""
    out = [json.loads(raw) for raw in store.lrange(f"{settings.namespace}:test:fires", 0, -1)]
    return [f for f in out if fn is None or f["fn"] == fn]


def scheduled(fire: dict[str, Any]) -> datetime:
    return ts(fire["payload"]["scheduled_time"])


def actual(fire: dict[str, Any]) -> datetime:
    return ts(fire["payload"]["actual_time"])


def ts(text: str) -> datetime:
    """An RFC 3339 time of a payload (``...Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def no_duplicates(found: list[dict[str, Any]]) -> None:
    times = [f["payload"]["scheduled_time"] for f in found]
    twice = sorted({t for t in times if times.count(t) > 1})
    assert not twice, f"slots fired more than once: {twice}"


def cron_triggers(cluster: Any, fn: str | None = None) -> list[dict[str, Any]]:
    triggers = cluster.trigger("engine::triggers::list", {})["triggers"]
    return [t for t in triggers if t["type"] == CRON and (fn is None or t["function_id"] == fn)]


def job_id(cluster: Any, fn: str) -> str:
    """The id of the (one) cron trigger of ``fn``, once the engine lists it."""
    found = wait_for(lambda: cron_triggers(cluster, fn), timeout=10,
                     what=f"a cron trigger of {fn}")
    assert len(found) == 1, found
    return str(found[0]["id"])


def status(store: Any, settings: Any, job: str) -> dict[str, str]:
    return dict(store.hgetall(f"{settings.namespace}:cron:status:{job}"))


def leader_pid(store: Any, settings: Any) -> int | None:
    """The pid of the leading beat, from ``NS:redbeat::lock`` (``host:pid:suffix``)."""
    owner = store.get(f"{settings.namespace}:redbeat::lock")
    if not owner:
        return None
    return int(owner.split(":")[1])


def cli(cluster: Any, *args: str, config: str | None = None,
        timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """``iii-broker ARGS`` in the cluster's namespace; its output captured."""
    env = dict(cluster.env)
    if config is not None:
        env["III_CONFIG_PATH"] = config_path(cluster, config)
    return subprocess.run(bin_cmd("iii-broker", *args), env=env, capture_output=True,
                          text=True, timeout=timeout)
