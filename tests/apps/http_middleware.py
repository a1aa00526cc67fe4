"""A worker app for the web middleware tests: middleware, conditions and traced routes."""

import threading

from iii_broker import App

app = App("http-middleware")
_calls = {"guarded": 0}
_lock = threading.Lock()


def route(function_id: str, path: str, method: str = "GET", **config):
    def decorate(handler):
        app.register_function(function_id, handler)
        app.register_trigger(type="http", function_id=function_id,
                             config={"api_path": path, "http_method": method, **config})
        return handler
    return decorate


@app.function("mw::global")
def global_middleware(payload):
    """Stops requests carrying ``x-stop``; otherwise says who the caller is."""
    request = payload["request"]
    if request["headers"].get("x-stop"):
        return {"action": "respond", "response": {
            "status_code": 401, "body": {"stopped_by": "mw::global"},
            "headers": {"X-Stopped": "yes"}}}
    return {"action": "continue", "context": {"user": "alice", "order": ["global"],
                                              "saw_method": request["method"]}}


def _appender(name):
    def middleware(payload):
        order = payload["context"].get("order", [])
        return {"action": "continue", "context": {"order": [*order, name]}}
    return middleware


app.register_function("mw::first", _appender("first"))
app.register_function("mw::second", _appender("second"))


@app.function("mw::explode")
def explode(payload):
    raise RuntimeError("middleware secret that must not leak")


@app.function("mw::nonsense")
def nonsense(payload):
    return {"action": "dance"}


@app.function("cond::allow")
def allow(payload):
    return payload["query_params"].get("allow") == "yes" and payload["context"]["user"] == "alice"


@route("mwweb::context", "/context")
def show_context(payload):
    return {"status_code": 200, "body": payload["context"]}


@route("mwweb::ordered", "/ordered", middleware_function_ids=["mw::first", "mw::second"])
def ordered(payload):
    return {"status_code": 200, "body": payload["context"]}


@route("mwweb::guarded", "/guarded")
def guarded(payload):
    with _lock:
        _calls["guarded"] += 1
    return {"status_code": 200, "body": {"guarded": True}}


@route("mwweb::calls", "/calls")
def calls(payload):
    with _lock:
        return dict(_calls)


@route("mwweb::exploding", "/exploding", middleware_function_ids=["mw::explode"])
def behind_explode(payload):
    return {"reached": True}


@route("mwweb::nonsense", "/nonsense", middleware_function_ids=["mw::nonsense"])
def behind_nonsense(payload):
    return {"reached": True}


@route("mwweb::conditional", "/conditional", condition_function_id="cond::allow")
def conditional(payload):
    return {"status_code": 200, "body": {"allowed": True}}


@route("mwweb::trace", "/trace")
def trace(payload, ctx):
    return {"trace_id": ctx.trace_id}


@route("mwweb::items", "/items", "POST")
def items(payload):
    return {"status_code": 201, "body": {"created": True}}
