"""Live messages: what a stream change or custom event looks like on the pub/sub channel
every stream process listens to (``NS:stream-live``), and the browser wrapper it becomes.

A message is a JSON header, a newline, and a packed value (:mod:`.codec`)::

    {"m": {"stream_name": S, "group_id": G}, "k": ITEM_ID|null, "e": EVENT, "ts": UNIX_MS}
    <packed value>

``EVENT`` is ``created``, ``updated`` or ``deleted`` (written by the script in :mod:`.lua`;
the value is the new one, or the old one for ``deleted``) or ``event`` (``stream::send``;
the header also has ``"name"``, the value is the event's data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import codec

KINDS = {"created": "create", "updated": "update", "deleted": "delete", "event": "event"}


@dataclass(frozen=True)
class LiveMessage:
    stream_name: str
    group_id: str
    item_id: str | None
    kind: str
    """``create``, ``update``, ``delete`` or ``event`` (the browser protocol's names)."""
    data: Any
    timestamp: int
    name: str | None = None
    """A custom event's type."""

    def wrapper(self) -> dict[str, Any]:
        """The message as iii's browser protocol sends it (iii-reference §3, streams)."""
        event: dict[str, Any]
        if self.kind == "event":
            event = {"type": "event", "event": {"type": self.name, "data": self.data}}
        else:
            event = {"type": self.kind, "data": self.data}
        return {"type": "stream", "timestamp": self.timestamp, "streamName": self.stream_name,
                "groupId": self.group_id, "id": self.item_id, "event": event}


def parse(message: str) -> LiveMessage:
    """A live message from the channel; raises ValueError when it is not one."""
    header_text, sep, body = message.partition("\n")
    if not sep:
        raise ValueError("a live message is a header line and a value")
    header = json.loads(header_text)
    meta = header["m"]
    kind = KINDS[header["e"]]
    return LiveMessage(stream_name=meta["stream_name"], group_id=meta["group_id"],
                       item_id=header.get("k"), kind=kind, data=codec.unpack(body),
                       timestamp=int(header["ts"]), name=header.get("name"))


def event_message(stream_name: str, group_id: str, item_id: str | None, name: str,
                  data: Any, timestamp_ms: int) -> str:
    """The live message of a custom event (``stream::send``)."""
    header = {"m": {"stream_name": stream_name, "group_id": group_id}, "k": item_id,
              "e": "event", "ts": timestamp_ms, "name": name}
    return json.dumps(header, separators=(",", ":")) + "\n" + codec.pack(data, "data")
