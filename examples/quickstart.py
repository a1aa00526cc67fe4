"""The quickstart app: ``iii-broker up -A examples.quickstart``.

Then, in another terminal: ``iii-broker trigger math::add '{"a": 2, "b": 3}'``.
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


app.register_trigger(type="http", function_id="math::add",
                     config={"api_path": "/add", "http_method": "POST"})
