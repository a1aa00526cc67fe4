"""Version 2 of the orders service: the same function ids as :mod:`tests.apps.deploy_v1`,
with ``POST /v2/orders`` and topic ``b`` instead (``GET /orders/health`` unchanged)."""

from tests.apps.deploy import make

app = make("v2", "/v2/orders", "b")
