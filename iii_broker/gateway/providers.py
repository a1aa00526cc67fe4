"""A custom trigger type an SDK worker provides (``registertriggertype``): the triggers
the cluster hands it (:mod:`iii_broker.modules.providers`) go to the SDK as
``registertrigger``/``unregistertrigger`` frames, as iii's engine sends them; the SDK
answers ``triggerregistrationresult``, and a refusal is kept with the trigger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..trigger import TriggerDef
from .frames import encode

if TYPE_CHECKING:
    from .connection import Connection


class SdkTriggerType:
    """The handler of a type one SDK connection provides."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def register_trigger(self, trigger: TriggerDef) -> None:
        self.conn.send(encode({"type": "registertrigger", "id": trigger.id,
                               "trigger_type": trigger.type, "function_id": trigger.function_id,
                               "config": trigger.config, "metadata": trigger.metadata}))

    def unregister_trigger(self, trigger: TriggerDef) -> None:
        self.conn.send(encode({"type": "unregistertrigger", "id": trigger.id,
                               "trigger_type": trigger.type}))
