"""Custom trigger types across kinds of workers: one provided by iii's Python SDK and used
by an iii-worker app, one provided by an iii-worker app and used by iii's Node SDK."""

from __future__ import annotations

import shutil

from tests.conftest import Cluster
from tests.gateway.conftest import NODE_DIR, SDK_DIR, sdk_env
from tests.helpers import Proc, python_cmd, wait_for


def ticks(cluster: Cluster, key: str) -> int:
    value = cluster.trigger("state::get", {"scope": "ticks", "key": key})
    return (value or {}).get("n", 0)


def ticker_triggers(cluster: Cluster) -> dict[str, dict]:
    found = cluster.trigger("engine::triggers::list", {})["triggers"]
    return {t["function_id"]: t for t in found if t["type"] == "ticker"}


def spawn_sdk(cluster: Cluster, name: str, cmd: list[str], url: str) -> Proc:
    proc = Proc(name, cmd, sdk_env(cluster.log_dir / f"home-{name}", url), cluster.log_dir)
    cluster.procs.append(proc)
    return proc


def test_a_type_the_python_sdk_provides_fires_an_iii_worker_apps_triggers(cluster: Cluster):
    cluster.engine()
    gateway = cluster.gateway()
    cluster.worker("tests.apps.ticker_consumer")
    assert "pending" in ticker_triggers(cluster)["ticks::count"]

    spawn_sdk(cluster, "sdk-ticker", python_cmd(str(SDK_DIR / "ticker.py")), gateway.url)
    wait_for(lambda: ticks(cluster, "a") >= 3, timeout=20,
             what="the SDK's ticker to fire the app's function")
    found = ticker_triggers(cluster)
    assert found["ticks::count"]["active"]
    refused = wait_for(lambda: ticker_triggers(cluster)["ticks::refused"].get("error"),
                       what="the SDK's refusal to be recorded")
    assert refused == "this SDK ticker refuses to tick"


def test_a_type_an_iii_worker_app_provides_fires_a_node_sdk_workers_trigger(
        cluster: Cluster, node: str):
    cluster.engine()
    gateway = cluster.gateway()
    cluster.worker("tests.apps.ticker_provider")
    spawn_sdk(cluster, "node-ticks", [shutil.which("node") or node,
                                      str(NODE_DIR / "ticks.mjs")], gateway.url)
    wait_for(lambda: ticks(cluster, "node") >= 3, timeout=30,
             what="the app's ticker to fire the Node worker's function")
    assert ticker_triggers(cluster)["node::ticked"]["active"]
