"""A module defining two apps, for the -A loader."""

from iii_broker import App

billing = App("billing")
shipping = App("shipping")


@billing.function("billing::charge")
def charge(payload):
    return {"charged": True}


@shipping.function("shipping::send")
def send(payload):
    return {"sent": True}
