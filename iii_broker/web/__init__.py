"""The web process: serves ``http`` triggers (stream WebSockets and the management API
come later). ``create_app`` is in :mod:`iii_broker.web.app`, the live route table in
:mod:`iii_broker.web.routes`, ``iii-broker web`` in :mod:`iii_broker.web.server`; the
``http`` trigger type and its config schema live in :mod:`iii_broker.modules.http`.
"""
