"""Custom trigger types (iii's register_trigger_type) between real iii-worker processes:
one app provides ``ticker``, another declares ``ticker`` triggers."""

from __future__ import annotations

import json
import signal

import pytest

from iii_broker import App, TriggerConfigError
from tests.helpers import wait_for


def triggers(cluster) -> dict[str, dict]:
    found = cluster.trigger("engine::triggers::list", {})["triggers"]
    return {t["function_id"]: t for t in found if t["type"] == "ticker"}


def ticks(cluster, name: str = "a") -> int:
    value = cluster.trigger("state::get", {"scope": "ticks", "key": name})
    return (value or {}).get("n", 0)


def ops(cluster, store) -> list[dict]:
    return [json.loads(x) for x in store.lrange(f"{cluster.settings.namespace}:test:ticker-ops",
                                                0, -1)]


def test_a_trigger_of_a_type_no_worker_provides_waits_pending_then_fires_once_one_does(
        cluster, store):
    cluster.engine()
    cluster.worker("tests.apps.ticker_consumer")
    t = triggers(cluster)["ticks::count"]
    assert not t["active"]
    assert t["pending"] == "no live worker provides trigger type 'ticker'"

    cluster.worker("tests.apps.ticker_provider")
    wait_for(lambda: ticks(cluster) >= 3, what="the provided ticker to fire the consumer")
    t = triggers(cluster)["ticks::count"]
    assert t["active"] and "pending" not in t
    # the provider refused the other trigger: inactive, with the provider's error
    refused = wait_for(lambda: triggers(cluster)["ticks::refused"].get("error") and
                       triggers(cluster)["ticks::refused"], what="the refusal to be recorded")
    assert refused["error"] == "ValueError: this ticker refuses to tick"
    assert not refused["active"]
    assert [o["function_id"] for o in ops(cluster, store) if o["op"] == "register"] \
        == ["ticks::count"]


def test_when_the_provider_stops_another_is_handed_every_trigger_and_takes_back_dead_ones(
        cluster, store):
    cluster.engine()
    first = cluster.worker("tests.apps.ticker_provider")
    consumer = cluster.worker("tests.apps.ticker_consumer")
    wait_for(lambda: ticks(cluster) >= 1, what="the first provider to fire")
    second = cluster.worker("tests.apps.ticker_provider")

    first.signal(signal.SIGTERM)
    first.wait(timeout=20)
    wait_for(lambda: any(o["op"] == "register" and o["pid"] == second.pid
                         for o in ops(cluster, store)),
             what="the second provider to be handed the trigger")
    before = ticks(cluster)
    wait_for(lambda: ticks(cluster) >= before + 3, what="the second provider to fire")

    # the trigger's function goes: the provider is told to stop firing it
    consumer.signal(signal.SIGTERM)
    consumer.wait(timeout=20)
    wait_for(lambda: any(o["op"] == "unregister" and o["pid"] == second.pid
                         and o["function_id"] == "ticks::count" for o in ops(cluster, store)),
             what="the provider to be told the trigger went inactive")

    second.signal(signal.SIGTERM)
    second.wait(timeout=20)
    wait_for(lambda: "pending" in triggers(cluster)["ticks::count"],
             what="the trigger to wait for a provider again")


def test_a_misspelt_builtin_type_is_refused_as_a_typo_and_builtin_types_cannot_be_provided():
    app = App("typos")
    app.register_function("a::b", lambda p: p)
    with pytest.raises(TriggerConfigError, match="did you mean 'http'"):
        app.register_trigger("htpp", "a::b", {})
    with pytest.raises(TriggerConfigError, match="did you mean 'cron'"):
        app.register_trigger("Cron", "a::b", {})
    with pytest.raises(TriggerConfigError, match="malformed"):
        app.register_trigger("has space", "a::b", {})
    assert app.register_trigger("webhook", "a::b", {"path": "/x"}).type == "webhook"

    class Nothing:
        def register_trigger(self, trigger): ...
        def unregister_trigger(self, trigger): ...
    with pytest.raises(TriggerConfigError, match="built in"):
        app.register_trigger_type("http", Nothing())
    class Half:
        def register_trigger(self, trigger): ...
    with pytest.raises(TypeError, match="needs a unregister_trigger"):
        app.register_trigger_type("half", Half())
    assert app.register_trigger_type("webhook", Nothing()).id == "webhook"
