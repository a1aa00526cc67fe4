"""The quickstart app: ``iii-broker up -A examples.quickstart``.

Then, in another terminal: ``iii-broker trigger math::add '{"a": 2, "b": 3}'``, or over
HTTP: ``curl -X POST localhost:3111/add -H 'content-type: application/json' -d '{"a": 2, "b": 3}'``.
What ran and what it logged: ``iii-broker invocations``, ``iii-broker logs``.
"""

import asyncio

from iii_broker import App

app = App("quickstart")


@app.function("math::add", description="Add two numbers")
def add(payload):
    return {"sum": payload["a"] + payload["b"]}


@app.function("math::sum_of_squares", description="a² + b², using math::square twice")
def sum_of_squares(payload, ctx):
    a = ctx.trigger("math::square", {"x": payload["a"]})
    b = ctx.trigger("math::square", {"x": payload["b"]})
    return {"result": a["result"] + b["result"]}


@app.function("math::square")
async def square(payload):
    await asyncio.sleep(0)
    return {"result": payload["x"] ** 2}


@app.function("math::add_http", description="POST /add: math::add over HTTP")
def add_over_http(request, ctx):
    # An http trigger's function gets the request (iii-reference §3) and answers a response.
    body = request["body"]
    if not isinstance(body, dict) or not all(
            isinstance(body.get(k), (int, float)) for k in ("a", "b")):
        # stored with the request's trace id: `iii-broker logs --level warn`
        ctx.logger.warning("refused a body that is not {a, b}: %r", body)
        return {"status_code": 400, "body": {"error": 'send a JSON object {"a": 2, "b": 3}'}}
    return {"status_code": 200, "body": add(body)}


@app.function("reports::minutely", description="Runs at the start of every minute (cron)")
def minutely(payload):
    # A cron trigger's function gets {trigger, job_id, scheduled_time, actual_time}.
    print(f"cron: slot {payload['scheduled_time']} fired at {payload['actual_time']}", flush=True)


app.register_trigger(type="http", function_id="math::add_http",
                     config={"api_path": "/add", "http_method": "POST"})
app.register_trigger(type="cron", function_id="reports::minutely",
                     config={"expression": "0 * * * * *"})
