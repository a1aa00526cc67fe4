"""A worker app with ``http`` triggers, for the web process tests."""

import time

from iii_broker import App

app = App("http-app")


def route(function_id: str, path: str, method: str = "GET"):
    def decorate(handler):
        app.register_function(function_id, handler)
        app.register_trigger(type="http", function_id=function_id,
                             config={"api_path": path, "http_method": method})
        return handler
    return decorate


@route("web::show_payload", "/users/:user_id/posts/:post_id")
def show_payload(payload):
    return {"status_code": 200, "body": payload}


@route("web::me", "/users/me/posts/:post_id")  # more specific than the route above
def me(payload):
    return {"status_code": 200, "body": {"me": True, "path_params": payload["path_params"]}}


@route("web::create", "/items", "POST")
def create(payload):
    return {"status_code": 201, "body": {"created": payload["body"]},
            "headers": {"Location": "/items/1"}}


@route("web::shout", "/shout", "PUT")
def shout(payload):
    return {"status_code": 200, "body": str(payload["body"]).upper()}


@route("web::fail", "/fail")
def fail(payload):
    raise RuntimeError("secret database password in this message")


@route("web::slow", "/slow")
def slow(payload):
    time.sleep(float(payload["query_params"].get("seconds", "2")))
    return {"status_code": 200, "body": {"slept": True}}


@route("web::list_headers", "/list-headers")
def list_headers(payload):
    return {"status_code": 202, "body": None,
            "headers": ["X-One: 1", "X-Two: two: with a colon"]}


@route("web::csv", "/report.csv")
def csv(payload):
    return {"status_code": 200, "body": "a,b\n1,2\n", "headers": {"Content-Type": "text/csv"}}


@route("web::plain", "/plain")
def plain(payload):
    return {"hello": "world"}


@route("web::broken", "/broken")
def broken(payload):
    return {"status_code": "two hundred", "body": "?"}
