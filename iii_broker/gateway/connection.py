"""One SDK worker's socket: the frames it sends, acted on in order on the socket's own
thread, and what the gateway sends it.

Registrations change the connection's :class:`SdkApp`, which its :class:`SdkWorker`
follows (registering with the engine, consuming the functions' queues). Calls the SDK
makes (W->E ``invokefunction``) are published through the gateway's caller and answered
from its reply thread, so the socket is read on while they wait (nested calls).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import uuid
from typing import TYPE_CHECKING, Any

from ..client import Enqueue, Void
from ..errors import IIIError, InvalidFunctionId, TriggerConfigError
from ..outage import store_outage
from ..store import RedisError
from ..tracing import SpanContext, continuing
from ..trigger import TriggerDef
from . import frames
from .frames import FrameError, error_frame, result_frame
from .member import Forwarding, SdkApp, SdkWorker, refused_message
from .providers import SdkTriggerType
from .socket import GatewaySocket

if TYPE_CHECKING:
    from websockets.sync.server import ServerConnection

    from .server import Gateway

log = logging.getLogger("iii.gateway")

ANNOUNCE = "engine::workers::register"
"""The SDK's announcement of itself: a Void call the gateway answers, not the engine."""
ANNOUNCED_FIELDS = ("name", "runtime", "version", "os", "pid", "description", "isolation")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Connection:
    """An SDK worker connected to this gateway."""

    def __init__(self, gateway: Gateway, ws: ServerConnection) -> None:
        self.gateway = gateway
        self.ws = ws
        self.worker_id = str(uuid.uuid4())
        self.reattach_token = secrets.token_urlsafe(24)
        remote = ws.remote_address
        self.remote = str(remote[0]) if isinstance(remote, tuple) else str(remote)
        self.announced: dict[str, Any] = {}
        self.app = SdkApp(f"sdk-{self.worker_id[:8]}", gateway.settings, gateway.caller)
        self.forwarding = Forwarding(self.send, self.who, gateway.telemetry.note_call)
        self.worker = SdkWorker(self, self.app, gateway.settings,
                                concurrency=gateway.options.concurrency,
                                modules=gateway.modules)
        self.sdk_triggers: dict[str, TriggerDef] = {}  # the SDK's trigger id -> ours
        self._retiring: str | None = None  # a previous worker id to retire once registered
        self._thread: threading.Thread | None = None

    # -- what others ask ------------------------------------------------------------

    def who(self) -> str:
        name = self.announced.get("name")
        return f"SDK worker {self.worker_id}" + (f" ({name})" if name else "")

    def describe(self) -> dict[str, Any]:
        """What the registry shows of this worker beside the usual fields."""
        info: dict[str, Any] = {"host": self.remote, "gateway": self.gateway.gateway_id,
                                "runtime": "unknown", "pid": None,
                                "reattach_digest": token_digest(self.reattach_token)}
        info.update({k: self.announced[k] for k in ANNOUNCED_FIELDS if k in self.announced})
        return info

    def send(self, text: str) -> None:
        """Send one text frame (any thread: the library serialises sends)."""
        self.ws.send(text)

    # -- life -----------------------------------------------------------------------

    def serve(self) -> None:
        """Read frames until the socket closes, then take the worker out of the cluster."""
        self.send(frames.encode({"type": "workerregistered", "worker_id": self.worker_id,
                                 "reattach_token": self.reattach_token}))
        if isinstance(self.ws, GatewaySocket):
            self.ws.on_result = self._answered
        self._thread = threading.Thread(target=self._run_worker, daemon=True,
                                        name=f"iii-sdk-{self.worker_id[:8]}")
        self._thread.start()
        why = "its socket closed"
        try:
            for message in self.ws:
                self.take(message)
        except Exception as exc:  # noqa: BLE001 - a broken socket ends the connection
            why = f"its socket failed: {exc}"
        finally:
            self.close(why)

    def _run_worker(self) -> None:
        try:
            self.worker.run(install_signals=False, checked=True)
        except Exception:  # noqa: BLE001
            log.exception("%s: its worker failed; closing the connection", self.who())
            self.ws.close(1011, "the gateway could not register this worker")

    def close(self, why: str) -> None:
        """The socket is gone: calls running on it fail ``invocation_stopped``, and the
        worker leaves the cluster (its triggers follow the lifecycle rule)."""
        self.worker.stop()  # first: it takes no more calls, so none is sent after this
        self.forwarding.stop_all(why)
        if self._thread is not None:
            self._thread.join(10)
        self.gateway.forget(self)
        log.info("%s left: %s", self.who(), why)

    # -- frames ---------------------------------------------------------------------

    def take(self, message: str | bytes) -> None:
        """Act on one frame; a bad one is answered with an error and the socket stays."""
        if isinstance(message, bytes) and message[:4] in frames.TELEMETRY_PREFIXES:
            self.gateway.telemetry.take(message, self)
            return
        try:
            frame = frames.parse(message)
        except FrameError as exc:
            self.refuse(exc)
            return
        handler = getattr(self, "on_" + frame["type"], None)
        if handler is None:
            log.debug("%s sent a %r frame: ignored", self.who(), frame["type"])
            return
        try:
            handler(frame)
        except IIIError as exc:
            self.refuse(FrameError(f"{frame['type']}: {exc.message}", frame))

    def refuse(self, exc: FrameError) -> None:
        log.warning("%s: %s", self.who(), exc.message)
        frame = exc.frame or {}
        invocation_id = frame.get("invocation_id")
        if frame.get("type") == "invokefunction" and isinstance(invocation_id, str):
            self.send(result_frame(invocation_id, str(frame.get("function_id", "")), error=exc))
        else:
            self.send(error_frame(exc.code, exc.message))

    def on_ping(self, _frame: dict[str, Any]) -> None:
        self.send('{"type":"pong"}')

    def on_registerfunction(self, frame: dict[str, Any]) -> None:
        function_id = frame["id"]
        if frame.get("invocation") is not None:
            self._reject_function(function_id, "HTTP-invoked functions ('invocation') are not "
                                  "supported by the iii-broker gateway: register a handler")
            return
        metadata = dict(frame.get("metadata") or {})
        for key in ("request_format", "response_format"):
            if frame.get(key) is not None:
                metadata[key] = frame[key]
        with self.app.changing:
            if function_id in self.app.functions:
                return  # a replay of one it has
            try:
                self.app.register_function(function_id, self.forwarding.handler(function_id),
                                           description=frame.get("description"),
                                           metadata=metadata)
            except InvalidFunctionId as exc:
                self._reject_function(function_id, exc.message)

    def _reject_function(self, function_id: str, message: str) -> None:
        log.warning("%s: function %r refused: %s", self.who(), function_id, message)
        # The SDK logs this one (and keeps its other functions); the error frame says why.
        self.send(frames.encode({"type": "registrationrejected",
                                 "code": "FUNCTION_NAMESPACE_CONFLICT", "namespace": "default",
                                 "function_id": function_id, "owner_worker_id": "iii-broker"}))
        self.send(error_frame("invalid_function_id", message))

    def on_unregisterfunction(self, frame: dict[str, Any]) -> None:
        with self.app.changing:
            self.app.unregister_function(frame["id"])
            for sdk_id, t in list(self.sdk_triggers.items()):
                if t.function_id == frame["id"]:
                    del self.sdk_triggers[sdk_id]

    def on_registertrigger(self, frame: dict[str, Any]) -> None:
        sdk_id, trigger_type = frame["id"], frame["trigger_type"]
        function_id = frame["function_id"]
        try:
            with self.app.changing:
                handle = self.app.register_trigger(trigger_type, function_id,
                                                   frame.get("config") or {},
                                                   frame.get("metadata"))
                self.sdk_triggers[sdk_id] = handle.definition
        except (TriggerConfigError, InvalidFunctionId) as exc:
            self._trigger_result(sdk_id, trigger_type, function_id, exc.message)

    def on_unregistertrigger(self, frame: dict[str, Any]) -> None:
        with self.app.changing:
            t = self.sdk_triggers.pop(frame["id"], None)
            if t is not None and t not in self.sdk_triggers.values():
                self.app.unregister_trigger(t.id)

    def on_reattach(self, frame: dict[str, Any]) -> None:
        previous, token = frame["previous_worker_id"], frame.get("reattach_token")
        if previous == self.worker_id:
            return
        try:
            digest = self.gateway.registry.worker_field(previous, "reattach_digest")
        except RedisError as exc:
            store_outage(self.gateway.settings).failed(exc)
            return
        if digest is None:
            return  # already gone: nothing to retire
        if not token or not hmac.compare_digest(str(digest), token_digest(token)):
            log.warning("%s: reattach to %s refused (wrong token): it stays until its lease "
                        "lapses", self.who(), previous)
            return
        self._retiring = previous

    def on_invokefunction(self, frame: dict[str, Any]) -> None:
        if frame["function_id"] == ANNOUNCE:
            data = frame.get("data")
            if isinstance(data, dict):
                self.announced = {k: data[k] for k in ANNOUNCED_FIELDS if k in data}
                if isinstance(data.get("name"), str):
                    self.app.name = data["name"]
                self.worker._on_app_change()  # registered again with what it announced
            if isinstance(frame.get("invocation_id"), str):
                self.send(result_frame(frame["invocation_id"], ANNOUNCE, result=None))
            return
        self.gateway.calls.submit(self._call, frame)

    def _answered(self, frame: dict[str, Any]) -> bool:
        """An ``invocationresult`` taken by the socket's reading thread (:mod:`.socket`)."""
        return self.forwarding.answer(frame["invocation_id"], frame)

    def on_invocationresult(self, frame: dict[str, Any]) -> None:
        if not self.forwarding.answer(frame["invocation_id"], frame):
            log.debug("%s answered %s, which no call waits for (timed out?)", self.who(),
                      frame["invocation_id"])

    def on_triggerregistrationresult(self, frame: dict[str, Any]) -> None:
        """The SDK's answer as the provider of a trigger's type: a refusal is kept and
        shown with the trigger (``engine::triggers::list``)."""
        error = frame.get("error")
        message = None
        if error is not None:
            message = str(error.get("message") if isinstance(error, dict) else error)
            log.warning("%s refused trigger %s: %s", self.who(), frame["id"], message)
        try:
            self.gateway.registry.note_trigger_error(frame["id"], message)
        except RedisError as exc:
            store_outage(self.gateway.settings).failed(exc)

    def on_registertriggertype(self, frame: dict[str, Any]) -> None:
        with self.app.changing:
            self.app.register_trigger_type(frame["id"], SdkTriggerType(self),
                                           description=frame.get("description") or "")

    def on_unregistertriggertype(self, frame: dict[str, Any]) -> None:
        with self.app.changing:
            self.app.unregister_trigger_type(frame["id"])

    # -- calls the SDK makes --------------------------------------------------------

    def _call(self, frame: dict[str, Any]) -> None:
        """On the gateway's call pool: publish the call; its answer is sent from the reply
        thread when it comes."""
        function_id, data = frame["function_id"], frame.get("data")
        invocation_id = frame.get("invocation_id")
        action = frame.get("action") or {}
        metadata = frame.get("metadata")
        caller = self.gateway.caller
        try:
            with continuing(SpanContext.parse(frame.get("traceparent"))):
                if action.get("type") == "enqueue":
                    queue = action.get("queue")
                    if not isinstance(queue, str) or not queue:
                        raise FrameError("an enqueue action needs 'queue' (a queue name)")
                    result = caller.call(function_id, data, action=Enqueue(queue),
                                         metadata=metadata)
                    if invocation_id:
                        self.send(result_frame(invocation_id, function_id, result=result))
                    return
                if action.get("type") == "void" or not invocation_id:
                    caller.call(function_id, data, action=Void, metadata=metadata)
                    return
                if action.get("type") is not None:
                    raise FrameError(f"unknown action type {action.get('type')!r}: use "
                                     "'void' or 'enqueue'")
                future = caller.submit(function_id, data, metadata=metadata)
        except IIIError as exc:
            if invocation_id:
                self._send_quietly(result_frame(invocation_id, function_id, error=exc))
            else:
                log.info("%s: fire-and-forget call of %r failed: %s", self.who(),
                         function_id, exc)
            return

        def answered(done: Any) -> None:
            try:
                text = result_frame(invocation_id, function_id, result=done.result())
            except IIIError as exc:
                text = result_frame(invocation_id, function_id, error=exc)
            self._send_quietly(text)
        future.add_done_callback(answered)

    def _send_quietly(self, text: str) -> None:
        try:
            self.send(text)
        except Exception as exc:  # noqa: BLE001 - the caller is gone; its SDK times out
            log.debug("%s: could not send an answer: %s", self.who(), exc)

    # -- what the worker tells this connection --------------------------------------

    def trigger_refused(self, t: TriggerDef, exc: IIIError) -> None:
        """The engine refused a trigger: tell the SDK (by its id) and drop it."""
        with self.app.changing:
            sdk_ids = [k for k, v in self.sdk_triggers.items() if v.id == t.id]
            for k in sdk_ids:
                del self.sdk_triggers[k]
            self.app.unregister_trigger(t.id)
        for sdk_id in sdk_ids or [t.id]:
            self._trigger_result(sdk_id, t.type, t.function_id, refused_message(exc))

    def _trigger_result(self, sdk_id: str, trigger_type: str, function_id: str,
                        message: str) -> None:
        log.warning("%s: %s trigger %s for %r refused: %s", self.who(), trigger_type, sdk_id,
                    function_id, message)
        self._send_quietly(frames.encode({
            "type": "triggerregistrationresult", "id": sdk_id, "trigger_type": trigger_type,
            "function_id": function_id,
            "error": {"code": "trigger_registration_failed", "message": message}}))

    def registered(self) -> None:
        """The worker's registration went through: a worker this one reattached as goes."""
        previous, self._retiring = self._retiring, None
        if previous is not None:
            self.gateway.retire(previous, by=self)
