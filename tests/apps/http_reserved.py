"""A worker with one ordinary route; tests add triggers under ``/_iii/`` to the registry
directly (workers are refused such triggers at registration)."""

from iii_broker import App

app = App("http-reserved")


@app.function("reserved::shadow")
def shadow(payload):
    return {"status_code": 200, "body": {"shadowed": True}}


app.register_trigger(type="http", function_id="reserved::shadow",
                     config={"api_path": "/not-reserved", "http_method": "GET"})
