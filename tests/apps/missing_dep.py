"""An app module whose own import fails: it needs a package that is not installed."""

import iii_broker_no_such_dependency  # noqa: F401

from iii_broker import App

app = App("never")
