"""A worker app whose route clashes with tests.apps.http_app's (only a parameter renamed)."""

from iii_broker import App

app = App("http-conflict")


@app.function("other::show")
def show(payload):
    return {"status_code": 200, "body": "not reached"}


app.register_trigger(type="http", function_id="other::show",
                     config={"api_path": "/users/:uid/posts/:pid/", "http_method": "GET"})
