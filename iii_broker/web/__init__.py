"""The web process (a host): Flask under gunicorn, serving the management API under
``/_iii/`` and whatever the enabled modules add through their ``web_setup`` hook (the http
module serves ``http`` triggers, :mod:`iii_broker.modules.http`).

``create_app`` is in :mod:`.app`, the web host that modules see in :mod:`.host`, the
management API in :mod:`.management`, ``iii-broker web`` in :mod:`.server`.
"""
