"""A module with an app factory and no App at import time, for the -A loader."""

from iii_broker import App


def create_app():
    app = App("made")
    app.register_function("made::hello", lambda payload: {"hello": payload})
    return app


def make_other():
    return App("other")


def not_a_factory():
    return 42


def needs_arguments(name):
    return App(name)
