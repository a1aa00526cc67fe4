"""A second worker app that adds a route while the web process runs."""

from iii_broker import App

app = App("http-extra")


@app.function("web::extra")
def extra(payload):
    return {"status_code": 200, "body": {"extra": True}}


app.register_trigger(type="http", function_id="web::extra",
                     config={"api_path": "/extra", "http_method": "GET"})
