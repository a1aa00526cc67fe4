"""A module whose only App is not called ``app``, for the -A loader."""

from iii_broker import App

shop = App("shop")


@shop.function("shop::buy")
def buy(payload):
    return {"bought": True}
