"""The route table follows the registry: no restart when workers come and go."""

from __future__ import annotations

import signal
import time

from tests.helpers import bin_cmd
from tests.web.conftest import start_web


def test_a_route_answers_503_while_its_worker_is_dead_and_200_when_one_returns(cluster):
    cluster.engine()
    worker = cluster.worker("tests.apps.http_app")
    web = start_web(cluster, III_HTTP_TIMEOUT_MS="1000")
    web.wait_status("/plain", 200)

    worker.signal(signal.SIGKILL)
    reply = web.wait_status("/plain", 503, timeout=10)
    error = reply.json()["error"]
    assert error["code"] == "function_not_found" and "web::plain" in error["message"]

    cluster.worker("tests.apps.http_app")
    assert web.wait_status("/plain", 200, timeout=5).json() == {"hello": "world"}


def test_a_route_added_by_a_new_worker_is_served_within_a_second_and_goes_when_it_stops(cluster):
    cluster.engine()
    cluster.worker("tests.apps.http_app")
    web = start_web(cluster)
    assert web.get("/extra").status == 404

    extra = cluster.worker("tests.apps.http_extra")  # returns once the engine registered it
    registered = time.monotonic()
    assert web.wait_status("/extra", 200, timeout=5).json() == {"extra": True}
    # Pub/sub makes it near-instant; the once-a-second reload bounds it. The margin is for
    # a loaded test machine, not for the web process.
    assert time.monotonic() - registered < 1.5

    extra.signal(signal.SIGTERM)
    extra.wait()
    assert web.wait_status("/extra", 503, timeout=1.5).json()["error"]["code"] == "function_not_found"
    assert web.get("/plain").status == 200  # the other worker's routes are untouched


def test_a_worker_whose_route_differs_only_in_parameter_names_is_refused_naming_both(cluster):
    cluster.engine()
    cluster.worker("tests.apps.http_app")
    clash = cluster.spawn("worker", bin_cmd("iii-worker", "-A", "tests.apps.http_conflict"))
    code = clash.wait(timeout=30)
    out = clash.output()
    assert code != 0, out
    assert ("GET /users/:uid/posts/:pid/ of 'other::show' conflicts with "
            "GET /users/:user_id/posts/:post_id of 'web::show_payload'") in out
    assert "Traceback" not in out
    # The same route again from the same function (a second replica) is fine.
    cluster.worker("tests.apps.http_app")
