"""A worker app for the tracing tests: an HTTP route whose function calls another, which
enqueues a job that fails its first attempt (so a trace holds a retry)."""

from iii_broker import App, Enqueue

app = App("traced")


@app.function("traced::front")
def front(payload, ctx):
    nested = ctx.trigger("traced::nested", {"fail_times": int(
        (payload.get("query_params") or {}).get("fail_times", "1"))})
    return {"status_code": 200, "body": {"nested": nested, "trace_id": ctx.span.trace_id}}


app.register_trigger(type="http", function_id="traced::front",
                     config={"api_path": "/traced", "http_method": "GET"})


@app.function("traced::nested")
def nested(payload, ctx):
    receipt = ctx.trigger("traced::job", payload, action=Enqueue("retry"))
    return {"enqueued": receipt.get("messageReceiptId")}


@app.function("traced::job")
def job(payload, ctx):
    if ctx.attempt <= payload.get("fail_times", 0):
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@app.function("traced::plain")
def plain(payload):
    return {"ok": True}


@app.function("traced::async_outer")
async def async_outer(payload, ctx):
    return await ctx.atrigger("traced::plain", {})


@app.function("traced::writer")
def writer(payload, ctx):
    ctx.trigger("state::set", {"scope": "traced", "key": "k", "value": payload.get("value", 1)})
    return {"ok": True}


@app.function("traced::watch")
def watch(payload):
    return None


app.register_trigger("state", "traced::watch", {"scope": "traced"})


@app.function("traced::logs")
def logs(payload, ctx):
    ctx.logger.warning("disk %s almost full", payload.get("disk", "/data"))
    return {"ok": True}
