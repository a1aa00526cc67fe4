"""An app with a cron trigger (refused by an engine whose cron module is disabled)."""

from iii_broker import App

app = App("cron-job")


@app.function("jobs::tick")
def tick(payload):
    return None


app.register_trigger(type="cron", function_id="jobs::tick",
                     config={"expression": "*/5 * * * * *"})
