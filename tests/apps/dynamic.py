"""A worker app whose own functions take other functions and triggers of it out of the
running worker, as iii's SDK does (``unregister_function``, handles' ``unregister()``).

- ``dyn::target`` (``GET /dyn/target``), ``dyn::other`` (``GET /dyn/other``) and
  ``dyn::handled`` (``GET /dyn/handled``, registered with ``register_function`` and kept
  as a handle) answer ``{"name", "pid"}``.
- ``dyn::drop_function {function_id}`` calls ``app.unregister_function(function_id)``.
- ``dyn::drop_route`` calls ``unregister()`` on the handle of ``dyn::other``'s trigger.
- ``dyn::drop_handle`` calls ``unregister()`` on the handle of ``dyn::handled``.

Each ``drop`` answers ``{"pid"}``: the worker that did it.
"""

import os

from iii_broker import App

app = App("dynamic")


def _answer(name):
    def handler(payload):
        return {"status_code": 200, "body": {"name": name, "pid": os.getpid()}}
    return handler


def _route(function_id, path):
    return app.register_trigger("http", function_id, {"api_path": path, "http_method": "GET"})


app.register_function("dyn::target", _answer("target"))
_route("dyn::target", "/dyn/target")

app.register_function("dyn::other", _answer("other"))
other_route = _route("dyn::other", "/dyn/other")

handled = app.register_function("dyn::handled", _answer("handled"))
_route("dyn::handled", "/dyn/handled")


@app.function("dyn::drop_function")
def drop_function(payload):
    app.unregister_function(payload["function_id"])
    return {"pid": os.getpid()}


@app.function("dyn::drop_route")
def drop_route(payload):
    other_route.unregister()
    return {"pid": os.getpid()}


@app.function("dyn::drop_handle")
def drop_handle(payload):
    handled.unregister()
    return {"pid": os.getpid()}
