"""The iii side of the web bench: ``iii-worker -A bench.web_apps``.

One function behind one ``http`` trigger, answering the same small JSON as the ceiling
(:mod:`bench.web_ceiling`).
"""

from __future__ import annotations

from typing import Any

from iii_broker import App

PATH = "/bench/ok"
RESPONSE: dict[str, Any] = {"status_code": 200, "body": {"ok": True}}

app = App("benchweb")


@app.function("benchweb::ok", description="Answers 200 {\"ok\": true} (web bench)")
def ok(_request: dict[str, Any]) -> dict[str, Any]:
    return RESPONSE


app.register_trigger(type="http", function_id="benchweb::ok",
                     config={"api_path": PATH, "http_method": "GET"})
