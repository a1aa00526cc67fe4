"""A worker app whose http trigger repeats a parameter name: the worker must not start."""

from iii_broker import App

app = App("http-bad-path")


@app.function("bad::path")
def show(payload):
    return payload


app.register_trigger(type="http", function_id="bad::path",
                     config={"api_path": "/a/:id/:id", "http_method": "GET"})
