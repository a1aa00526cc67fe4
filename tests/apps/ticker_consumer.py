"""Uses the custom trigger type ``ticker`` (provided by ``tests.apps.ticker_provider``, or
by an SDK worker): ``ticks::count`` counts its fires in state (scope ``ticks``, key its
trigger's config ``name``)."""

from iii_broker import App

app = App("ticker-consumer")


@app.function("ticks::count")
def count(payload, ctx):
    ctx.trigger("state::update", {"scope": "ticks", "key": payload["config"]["name"],
                                  "ops": [{"type": "increment", "path": "n", "by": 1}]})


@app.function("ticks::refused")
def refused(payload):
    return None


app.register_trigger("ticker", "ticks::count", {"name": "a"})
app.register_trigger("ticker", "ticks::refused", {"name": "r", "refuse": True})
