"""Helpers shared by the trigger-lifecycle tests: the trigger list, HTTP answers polled
until they change, and the columns of a table a CLI command printed."""

from __future__ import annotations

import re
from typing import Any

from tests.helpers import wait_for
from tests.web.conftest import Reply, Web

# The triggers of tests/apps/deploy_v1.py and deploy_v2.py, as bindings() lists them.
V1 = {("http", "orders::create", "POST /v1/orders"),
      ("http", "orders::health", "GET /orders/health"),
      ("durable:subscriber", "orders::on_event", "a")}
V2 = {("http", "orders::create", "POST /v2/orders"),
      ("http", "orders::health", "GET /orders/health"),
      ("durable:subscriber", "orders::on_event", "b")}


def triggers(cluster: Any) -> list[dict[str, Any]]:
    """``engine::triggers::list``'s entries."""
    return cluster.client.trigger("engine::triggers::list", {}, timeout_ms=5000)["triggers"]


def bindings(cluster: Any) -> set[tuple[str, str, str]]:
    """Each trigger as ``(type, function_id, where)``: where is an http trigger's
    ``METHOD path`` or a subscriber's topic."""
    out = set()
    for t in triggers(cluster):
        c = t["config"]
        where = f"{c['http_method']} {c['api_path']}" if t["type"] == "http" else c.get("topic", "")
        out.add((t["type"], t["function_id"], where))
    return out


def call(web: Web, method: str, path: str) -> Reply:
    body = b"{}" if method in ("POST", "PUT") else None
    headers = {"Content-Type": "application/json"} if body else {}
    return web.request(method, path, body=body, headers=headers, timeout=5)


def wait_answer(web: Web, method: str, path: str, status: int, timeout: float = 5) -> Reply:
    """Poll ``method path`` until it answers ``status``; returns that reply. The error says
    what it answered last."""
    last: list[Reply] = []

    def answered() -> Reply | None:
        assert web.proc.popen.poll() is None, f"web exited early:\n{web.proc.output()}"
        reply = call(web, method, path)
        last[:] = [reply]
        return reply if reply.status == status else None
    try:
        return wait_for(answered, timeout=timeout, what=f"{method} {path} to answer {status}")
    except AssertionError as exc:
        seen = f" (last: {last[0].status} {last[0].text[:200]!r})" if last else ""
        raise AssertionError(f"{exc}{seen}") from None


def columns(stdout: str) -> list[dict[str, str]]:
    """The rows of a table printed by ``print_table`` (columns at least two spaces apart,
    a header cell may hold one space: ``IN FLIGHT``), each as ``{HEADER: cell}``; a cell is
    cut at the next header's column, so an empty one reads as ``""``."""
    header, *lines = stdout.splitlines()
    spans = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    out = []
    for line in lines:
        row = {}
        for i, (name, start) in enumerate(spans):
            end = spans[i + 1][1] if i + 1 < len(spans) else None
            row[name] = line[start:end].strip()
        out.append(row)
    return out
