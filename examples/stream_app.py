"""A live todo list: HTTP routes change stream items; browsers watch them over a WebSocket.

    iii-broker up -A examples.stream_app       # engine, worker, web (:3111) and stream (:3112)

Open http://localhost:3111/ (the page is ``examples/stream/index.html``, served by
``todo::page``), then change the list from another terminal and watch the page follow:

    curl -X POST localhost:3111/todos -H 'content-type: application/json' -d '{"text": "milk"}'
    curl -X PUT localhost:3111/todos/ID -H 'content-type: application/json' \\
         -d '{"text": "milk", "done": true}'
    curl -X DELETE localhost:3111/todos/ID

Each item lives at stream ``todo``, group ``inbox`` (``?group=NAME`` picks another), item
id ID, and carries its id in its data, as iii's stream clients expect.
"""

import uuid
from pathlib import Path

from iii_broker import App

app = App("stream-example")
STREAM = "todo"
PAGE_DIR = Path(__file__).resolve().parent / "stream"
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/iii-stream.js": ("iii-stream.js", "text/javascript; charset=utf-8")}


def _group(request):
    group = request["query_params"].get("group") or "inbox"
    return group if isinstance(group, str) else group[0]


def _item(request):
    body = request["body"]
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return None
    return {"text": body["text"], "done": bool(body.get("done", False))}


@app.function("todo::add", description="POST /todos {text}: a new item (201 with it)")
def add(request, ctx):
    item = _item(request)
    if item is None:
        return {"status_code": 400, "body": {"error": 'send a JSON object {"text": "..."}'}}
    item_id = uuid.uuid4().hex[:12]
    data = {"id": item_id, **item}
    ctx.trigger("stream::set", {"stream_name": STREAM, "group_id": _group(request),
                                "item_id": item_id, "data": data})
    return {"status_code": 201, "body": data}


@app.function("todo::replace", description="PUT /todos/:id {text, done}: replace an item")
def replace(request, ctx):
    item = _item(request)
    if item is None:
        return {"status_code": 400, "body": {"error": 'send {"text": "...", "done": true}'}}
    item_id = request["path_params"]["id"]
    data = {"id": item_id, **item}
    ctx.trigger("stream::set", {"stream_name": STREAM, "group_id": _group(request),
                                "item_id": item_id, "data": data})
    return {"status_code": 200, "body": data}


@app.function("todo::remove", description="DELETE /todos/:id: remove an item (404 if absent)")
def remove(request, ctx):
    result = ctx.trigger("stream::delete", {"stream_name": STREAM, "group_id": _group(request),
                                            "item_id": request["path_params"]["id"]})
    if not result or result.get("old_value") is None:
        return {"status_code": 404, "body": {"error": "no such item"}}
    return {"status_code": 204, "body": ""}


@app.function("todo::page", description="GET / and /iii-stream.js: the live page")
def page(request):
    name, content_type = PAGE_FILES[request["path"]]
    return {"status_code": 200, "body": (PAGE_DIR / name).read_text(),
            "headers": {"Content-Type": content_type}}


app.register_trigger(type="http", function_id="todo::add",
                     config={"api_path": "/todos", "http_method": "POST"})
app.register_trigger(type="http", function_id="todo::replace",
                     config={"api_path": "/todos/:id", "http_method": "PUT"})
app.register_trigger(type="http", function_id="todo::remove",
                     config={"api_path": "/todos/:id", "http_method": "DELETE"})
for path in PAGE_FILES:
    app.register_trigger(type="http", function_id="todo::page",
                         config={"api_path": path, "http_method": "GET"})
