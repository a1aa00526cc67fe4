"""One engine and one state-app worker for a whole test module (each test uses its own
scopes and keys), and the state trigger calls the app records."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from iii_broker import Settings
from tests.conftest import Cluster
from tests.helpers import delete_namespace, dump, free_port

STATE_APP = "tests.apps.state_app"


@pytest.fixture(scope="module")
def state_cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    settings = Settings(broker_url=redis_url, redis_url=redis_url,
                        namespace=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval_s=0.3,
                        default_timeout_ms=10_000, http_port=free_port())
    c = Cluster(settings, Path(tmp_path_factory.mktemp("state")))
    try:
        c.engine()
        c.worker(STATE_APP)
        yield c
    except BaseException:
        print(dump(c.procs))
        raise
    finally:
        c.close()
        delete_namespace(settings.redis_url, settings.namespace)


@pytest.fixture
def r(state_cluster: Cluster) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(state_cluster.settings.redis_url, decode_responses=True)
    yield client
    client.close()


def events(r: redis.Redis, cluster: Cluster, fn: str | None = None) -> list[dict[str, Any]]:
    """The state trigger calls the app recorded (of ``fn``), oldest first."""
    raw = r.lrange(f"{cluster.settings.namespace}:test:state-events", 0, -1)
    calls = [json.loads(x) for x in raw]
    return [c for c in calls if fn is None or c["fn"] == fn]
