"""The Flask app of the web process: the management API, then whatever the enabled modules
serve (the http module serves ``http`` triggers on every other path).

:func:`create_app` builds Flask and the web host (:class:`~.host.WebProcess`: request ids,
iii's error envelope for whatever no view answers), registers the management blueprint
(:mod:`.management`) before anything else, and calls ``web_setup(app, host)`` of each module
enabled in the engine settings file.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask

from ..console import setup_logging
from ..modules import EngineConfig, Module
from ..settings import Settings
from .host import WebProcess
from .management import blueprint as management


def create_app(settings: Settings | None = None, modules: Sequence[Module] | None = None) -> Flask:
    """The web process's Flask app.

    ``settings`` come from ``III_*`` variables (and logging is set up) unless given;
    ``modules`` are those enabled in the engine settings file (``III_CONFIG_PATH``) unless
    given. Modules may start threads (the http module follows the registry in one).
    Raises :class:`~iii_broker.errors.ConfigError` for bad settings or a bad settings file.
    """
    if settings is None:
        settings = Settings.from_env()
        setup_logging(settings)
    if modules is None:
        modules = EngineConfig.load(settings.config_path).modules
    app = Flask("iii_broker.web", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.http_body_limit
    app.url_map.merge_slashes = False  # a path reaches the views as sent
    host = WebProcess(app, settings)
    app.register_blueprint(management)  # /_iii/: its guard runs before any module's hooks
    for module in modules:
        module.process_started("web", settings)
    for module in modules:
        module.web_setup(app, host)
    return app
