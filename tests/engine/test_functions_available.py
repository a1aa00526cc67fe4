"""The ``engine::functions-available`` trigger type: its function is called (a Void call)
with ``{"functions": [...]}``, as ``engine::functions::list`` lists them, whenever the set
of available functions changes: a worker starting, a worker stopping."""

from __future__ import annotations

import json
import signal

from tests.helpers import wait_for


def _seen(store, settings) -> list[dict]:
    return [json.loads(x) for x in store.lrange(f"{settings.namespace}:test:available", 0, -1)]


def _ids(payload: dict) -> set[str]:
    return {f["function_id"] for f in payload["functions"]}


def test_a_functions_available_trigger_fires_when_a_worker_starts_and_when_it_stops(
        cluster, store, settings):
    cluster.engine()
    cluster.worker("tests.apps.watcher")
    shop = cluster.worker("tests.apps.one_app")  # serves shop::buy

    def payload_with_shop() -> int | None:
        seen = _seen(store, settings)
        return next((i + 1 for i, p in enumerate(seen) if "shop::buy" in _ids(p)), None)
    after = wait_for(payload_with_shop, timeout=5,
                     what="a functions-available payload listing shop::buy")
    with_shop = _seen(store, settings)[after - 1]
    assert set(with_shop) == {"functions"}
    # The functions as engine::functions::list has them now (nothing changed since).
    listed = cluster.client.trigger("engine::functions::list", {})["functions"]
    assert _ids(with_shop) == {f["function_id"] for f in listed}
    assert {"shop::buy", "watch::functions", "engine::functions::list"} <= _ids(with_shop)

    shop.signal(signal.SIGTERM)
    assert shop.wait() == 0
    gone = wait_for(lambda: next((p for p in _seen(store, settings)[after:]
                                  if "shop::buy" not in _ids(p)), None), timeout=5,
                    what="a later functions-available payload without shop::buy")
    assert "watch::functions" in _ids(gone)
