"""Two workers racing to register the same route: exactly one gets it."""

from __future__ import annotations

import threading

from iii_broker.engine.service import Engine
from iii_broker.errors import TriggerConfigError
from iii_broker.trigger import TriggerDef


def _payload(n: int) -> dict:
    fid = f"race::f{n}"
    trigger = TriggerDef("http", fid, {"api_path": f"/race/:p{n}", "http_method": "GET"})
    return {"worker": {"id": f"w{n}", "name": "race"}, "functions": [{"function_id": fid}],
            "triggers": [trigger.to_dict()]}


def test_concurrent_registrations_of_one_route_let_exactly_one_through(settings, store):
    engines = [Engine(settings), Engine(settings)]  # as if two engine processes served them
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def register(n: int) -> None:
        barrier.wait()
        try:
            engines[n % 2].register_worker(_payload(n))
            outcomes.append("ok")
        except TriggerConfigError as exc:
            assert "conflicts with" in exc.message
            outcomes.append("refused")

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    http = [t for t in engines[0].registry.triggers() if t["type"] == "http"]
    assert len(http) == 1
