"""The Flask web process (HTTP triggers, stream WebSockets, management API).

Arrives with the HTTP triggers issue; the ``http`` trigger type and its config
schema already live in :mod:`iii_broker.modules.http`.
"""
