"""A worker written with iii's own Python SDK (``iii-sdk`` from PyPI, unmodified), for the
gateway tests. It connects to the gateway at ``$III_URL``, registers its functions as
``$SDK_PREFIX::NAME`` (``py`` unless set) and an HTTP trigger on ``/$SDK_PREFIX/hello``,
then prints READY and serves until killed.

The functions (the same in ``../node/worker.mjs``, iii's Node SDK):

* ``echo``: the payload back, with this worker's runtime, pid and trace id.
* ``fail``: raises ``sdk handler failed: <why>``.
* ``call``: calls ``function_id`` with ``payload`` through the SDK (``action``: none,
  ``"void"`` or a queue name to enqueue on) and returns ``{"result"}``, or the SDK's
  error as ``{"error": {"code", "message"}}``.
* ``nested``: calls the Kombu worker's ``gw::call``, which calls this worker's ``echo``
  back over the same socket; then, given a ``tag``, writes a log record.
* ``flaky``: records each attempt with ``gw::record`` (``<id>:attempt-<n>``); the first
  attempt of an id fails.
* ``slow``: records ``<id>`` with ``gw::record``, then sleeps ``seconds``.
* ``log``: writes a log record with the SDK's Logger; returns the trace id.
* ``hello``: the HTTP trigger's function.
"""

import asyncio
import os
import threading

from iii import InitOptions, InvocationError, TriggerAction, register_worker
from iii_helpers.observability import Logger, current_trace_id

PREFIX = os.environ.get("SDK_PREFIX", "py")
RUNTIME = "python"

iii = register_worker(os.environ["III_URL"], InitOptions(invocation_timeout_ms=15_000))
attempts: dict[str, int] = {}


def fid(name: str) -> str:
    return f"{PREFIX}::{name}"


async def echo(data):
    return {"payload": data, "runtime": RUNTIME, "pid": os.getpid(), "trace_id": current_trace_id()}


async def fail(data):
    raise ValueError(f"sdk handler failed: {data['why']}")


async def call(data):
    request = {"function_id": data["function_id"], "payload": data.get("payload")}
    action = data.get("action")
    if action == "void":
        request["action"] = TriggerAction.Void()
    elif action:
        request["action"] = TriggerAction.Enqueue(queue=action)
    try:
        return {"result": await iii.trigger_async(request)}
    except InvocationError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}


async def nested(data):
    inner = await iii.trigger_async({"function_id": "gw::call",
                                     "payload": {"function_id": fid("echo"), "payload": data}})
    if "tag" in data:
        Logger().info(f"{data['tag']} after the nested call")
    return {"inner": inner, "trace_id": current_trace_id()}


async def flaky(data):
    n = attempts[data["id"]] = attempts.get(data["id"], 0) + 1
    await iii.trigger_async({"function_id": "gw::record",
                             "payload": {"id": f"{data['id']}:attempt-{n}"}})
    if n == 1:
        raise RuntimeError(f"attempt 1 of {data['id']} fails on purpose")
    return {"attempts": n}


async def slow(data):
    await iii.trigger_async({"function_id": "gw::record", "payload": {"id": data["id"]}})
    await asyncio.sleep(data["seconds"])
    return {"slept": data["seconds"]}


async def log(data):
    Logger().info(f"{data['tag']} from the {RUNTIME} SDK", {"tag": data["tag"]})
    return {"trace_id": current_trace_id()}


async def hello(request):
    body = request.get("body") or {}
    return {"status_code": 201, "body": {"hello": body.get("name"), "runtime": RUNTIME,
                                         "path": request.get("path")},
            "headers": {"x-sdk": RUNTIME}}


for name, handler in [("echo", echo), ("fail", fail), ("call", call), ("nested", nested),
                      ("flaky", flaky), ("slow", slow), ("log", log), ("hello", hello)]:
    iii.register_function(fid(name), handler)
iii.register_trigger({"type": "http", "function_id": fid("hello"),
                      "config": {"api_path": f"/{PREFIX}/hello", "http_method": "POST"}})
print("READY", flush=True)
threading.Event().wait()
