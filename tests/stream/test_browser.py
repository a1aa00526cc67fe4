"""The live todo page (examples/stream/) in headless Chromium, against real processes:
an engine, a worker of examples.stream_app, a web process serving the page and a stream
process serving its WebSocket, on real Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_broker import Settings
from tests.conftest import Cluster
from tests.helpers import Proc, bin_cmd, delete_namespace, dump, free_port, wait_for
from tests.web.conftest import Web, start_web

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that phones home: this machine's network is closed.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STREAM = "todo"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium in CI")
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def start_stream(cluster: Cluster, wait: bool = True) -> int:
    """``iii-broker stream`` on the settings' stream port; waits until it listens."""
    port = cluster.settings.stream_port
    proc = cluster.spawn("stream", bin_cmd("iii-broker", "stream"), III_STREAM_PORT=str(port))
    if wait:
        wait_listening(proc, port)
    return port


def wait_listening(proc: Proc, port: int) -> None:
    def listens() -> bool:
        assert proc.popen.poll() is None, f"{proc.name} exited early:\n{dump([proc])}"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listens, timeout=20, what=f"{proc.name} to listen on {port}")


@pytest.fixture(scope="module")
def todo(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Web, int]]:
    """One engine, worker of examples.stream_app, web and stream process for the module's
    tests (each uses a group of its own; the last one restarts the stream process)."""
    settings = Settings(broker_url=redis_url, redis_url=redis_url,
                        namespace=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval_s=0.3,
                        default_timeout_ms=10_000, stream_port=free_port())
    cluster = Cluster(settings, tmp_path_factory.mktemp("stream-browser"))
    try:
        cluster.engine()
        cluster.worker("examples.stream_app", concurrency=4)
        stream_port = start_stream(cluster, wait=False)  # starts while the web process does
        web = start_web(cluster)
        wait_listening(cluster.procs[-2], stream_port)
        yield cluster, web, stream_port
    except BaseException:
        print(dump(cluster.procs))
        raise
    finally:
        cluster.close()
        delete_namespace(redis_url, settings.namespace)


def stream_set(cluster: Cluster, group: str, item_id: str, data: Any) -> None:
    cluster.trigger("stream::set", {"stream_name": STREAM, "group_id": group, "item_id": item_id,
                                    "data": data})


def post(web: Web, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    reply = web.request(method, path, json.dumps(body) if body is not None else None,
                        headers={"Content-Type": "application/json"})
    assert reply.status < 300, (reply.status, reply.text)
    return reply.json() if reply.body else None


def test_the_example_routes_write_stream_items_and_refuse_a_bad_body(todo):
    cluster, web, _ = todo
    added = post(web, "POST", "/todos?group=g0", {"text": "milk"})
    assert added == {"id": added["id"], "text": "milk", "done": False}
    item = {"stream_name": STREAM, "group_id": "g0", "item_id": added["id"]}
    assert cluster.trigger("stream::get", item) == added
    post(web, "PUT", f"/todos/{added['id']}?group=g0", {"text": "milk", "done": True})
    assert cluster.trigger("stream::get", item)["done"] is True
    post(web, "DELETE", f"/todos/{added['id']}?group=g0")
    assert cluster.trigger("stream::get", item) is None
    assert web.request("DELETE", f"/todos/{added['id']}?group=g0").status == 404
    bad = web.request("POST", "/todos", b'{"txt": 1}', headers={"Content-Type": "application/json"})
    assert bad.status == 400 and "text" in bad.json()["error"]
    page = web.get("/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "iii-stream.js" in page.text
    assert web.get("/iii-stream.js").text.startswith("// A small browser client")


def test_the_page_follows_the_group_from_sync_through_set_update_delete_and_events(todo, browser):
    from playwright.sync_api import expect

    cluster, web, stream_port = todo
    group = "g1"
    stream_set(cluster, group, "a", {"id": "a", "text": "milk", "done": False})
    stream_set(cluster, group, "b", {"id": "b", "text": "eggs", "done": False})
    stream_set(cluster, "other", "x", {"id": "x", "text": "not this group", "done": False})

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        # The page and its script come from the example app's own HTTP routes.
        page.goto(f"http://127.0.0.1:{web.port}/?url=ws://127.0.0.1:{stream_port}/&group={group}")
        items = page.locator("#items li")
        expect(items).to_have_text(["milk", "eggs"])  # the join's sync
        expect(page.locator("#status")).to_have_attribute("data-status", "open")

        stream_set(cluster, group, "c", {"id": "c", "text": "bread", "done": False})  # create
        expect(items).to_have_text(["milk", "eggs", "bread"])
        stream_set(cluster, group, "a", {"id": "a", "text": "oat milk", "done": True})  # update
        expect(items).to_have_text(["oat milk", "eggs", "bread"])
        expect(page.locator("li.done")).to_have_text(["oat milk"])
        cluster.trigger("stream::delete", {"stream_name": STREAM, "group_id": group, "item_id": "b"})
        expect(items).to_have_text(["oat milk", "bread"])
        stream_set(cluster, "other", "y", {"id": "y", "text": "still not this group"})
        cluster.trigger("stream::send", {"stream_name": STREAM, "group_id": group, "type": "ping",
                                         "data": {"n": 1}})
        expect(page.locator("#event")).to_have_text('ping: {"n":1}')
        expect(items).to_have_text(["oat milk", "bread"])

        # The example's routes change the list through stream::set and stream::delete.
        added = post(web, "POST", f"/todos?group={group}", {"text": "tea"})
        expect(items).to_have_text(["oat milk", "bread", "tea"])
        post(web, "PUT", f"/todos/{added['id']}?group={group}", {"text": "green tea", "done": True})
        expect(page.locator("li.done")).to_have_text(["oat milk", "green tea"])
        post(web, "DELETE", f"/todos/c?group={group}")
        expect(items).to_have_text(["oat milk", "green tea"])
        assert errors == []
    finally:
        page.close()


def test_the_page_joins_again_and_resyncs_after_the_stream_process_restarts(todo, browser):
    from playwright.sync_api import expect

    cluster, web, stream_port = todo
    group = "g2"
    stream_set(cluster, group, "a", {"id": "a", "text": "one"})
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{web.port}/?url=ws://127.0.0.1:{stream_port}/&group={group}")
        items = page.locator("#items li")
        expect(items).to_have_text(["one"])

        stream = next(p for p in cluster.procs if p.name == "stream")
        stream.signal(signal.SIGQUIT)  # gunicorn's quick shutdown: the sockets drop at once
        stream.stop(signalled=True)
        expect(page.locator("#status")).to_have_attribute("data-status", "closed")
        stream_set(cluster, group, "b", {"id": "b", "text": "two"})  # while nobody serves the page
        start_stream(cluster)
        expect(items).to_have_text(["one", "two"], timeout=10_000)  # the re-join's sync
        expect(page.locator("#status")).to_have_attribute("data-status", "open")
        stream_set(cluster, group, "c", {"id": "c", "text": "three"})
        expect(items).to_have_text(["one", "two", "three"])
    finally:
        page.close()
