"""Version 1 of the orders service: ``POST /v1/orders``, ``GET /orders/health``, and
``orders::on_event`` subscribed to durable topic ``a`` (see :mod:`tests.apps.deploy`)."""

from tests.apps.deploy import make

app = make("v1", "/v1/orders", "a")
