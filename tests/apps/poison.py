"""The app the poison-payload fault tests run: echo, add, and results too deep or too large."""

from iii_broker import App

app = App("poison")


@app.function("poison::add")
def add(payload):
    return {"sum": payload["a"] + payload["b"]}


@app.function("poison::echo")
def echo(payload):
    return payload


@app.function("poison::deep_result")
def deep_result(payload):
    """A result nested ``payload["depth"]`` lists deep (built without recursion)."""
    result: list = []
    for _ in range(payload["depth"] - 1):
        result = [result]
    return result


@app.function("poison::big_result")
def big_result(payload):
    return "x" * payload["chars"]


app.register_trigger(type="subscribe", function_id="poison::echo", config={"topic": "poison"})
