"""The fan-out of one stream process: ONE Redis subscription feeding all its sockets.

Every stream change and custom event is published once on ``NS:stream-live`` (by the
write script of :mod:`iii_broker.documents`, or ``stream::send``). The hub's listener
thread holds the process's only subscription, to that channel and to ``NS:events`` (the
registry's changes, which make :class:`~.hooks.Hooks` reload its triggers). Each live
message is parsed and encoded to the browser wrapper once, then queued on every socket
subscribed to its group — ``(stream_name, group_id)`` — or to its item — ``(stream_name,
group_id, item_id)`` — once per socket, however many of its subscriptions match.

When Redis goes away the sockets stay open; the listener logs the outage once
(:class:`~iii_broker.outage.Outage`), retries with a capped backoff, and once subscribed
again sends every subscription a fresh ``sync``, since changes made meanwhile were missed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from ...documents import Collection, DocumentStore
from ...documents import live as live_messages
from ...errors import BrokerUnavailable
from ...outage import Backoff, Outage, is_outage
from ...store import Keys
from . import protocol
from .hooks import Hooks
from .peer import GOING_AWAY, Peer
from .protocol import Subscription
from .wire import Frame

log = logging.getLogger("iii.stream")

LISTEN_POLL_S = 1.0
"""How often the listener looks up from its subscription to see whether it should stop."""

Target = tuple[str, ...]


class Hub:
    """The sockets of one process and what each is subscribed to."""

    def __init__(self, store: redis.Redis, namespace: str, outage: Outage, hooks: Hooks,
                 *, compression: bool = False) -> None:
        self.store = store
        self.compression = compression
        self.keys = Keys(namespace)
        self.documents = DocumentStore(store)
        self.outage = outage
        self.hooks = hooks
        self.peers: set[Peer] = set()
        self._targets: dict[Target, set[Peer]] = {}
        self.subscribed = threading.Event()
        """Set while the listener's subscription is confirmed."""
        self._stopping = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="iii-stream-live",
                                          daemon=True)

    def start(self) -> None:
        self._listener.start()

    def stop(self) -> None:
        """Close every socket (1001, going away) and stop listening."""
        self._stopping.set()
        for peer in list(self.peers):
            peer.close(GOING_AWAY, "the stream process is shutting down")

    # -- sockets and subscriptions ----------------------------------------------------------

    def add(self, peer: Peer) -> None:
        self.peers.add(peer)

    def remove(self, peer: Peer) -> list[Subscription]:
        """Forget ``peer``; returns the subscriptions it still had."""
        self.peers.discard(peer)
        subs = list(peer.subscriptions.values())
        for sub in subs:
            self.unsubscribe(peer, sub.subscription_id)
        return subs

    def subscribe(self, peer: Peer, sub: Subscription) -> None:
        """Deliver ``sub``'s group or item to ``peer`` from now on (a join with a
        subscription id the socket already has replaces that subscription)."""
        self.unsubscribe(peer, sub.subscription_id)
        peer.subscriptions[sub.subscription_id] = sub
        self._targets.setdefault(sub.target, set()).add(peer)

    def unsubscribe(self, peer: Peer, subscription_id: str) -> Subscription | None:
        sub = peer.subscriptions.pop(subscription_id, None)
        if sub is None:
            return None
        if not any(s.target == sub.target for s in peer.subscriptions.values()):
            peers = self._targets.get(sub.target)
            if peers is not None:
                peers.discard(peer)
                if not peers:
                    del self._targets[sub.target]
        return sub

    def subscriber_count(self) -> int:
        return sum(len(p.subscriptions) for p in self.peers)

    # -- reading and sending -------------------------------------------------------------

    def sync(self, sub: Subscription) -> str:
        """The ``sync`` message of ``sub``, read from Redis now; raises
        :class:`BrokerUnavailable`. Its timestamp is Redis's clock (as live messages'),
        taken before the read, so no later change looks older than the sync."""
        try:
            seconds, micros = self.store.time()
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc
        coll = Collection(key=self.keys.stream_group(sub.stream_name, sub.group_id),
                          index=self.keys.stream_groups(sub.stream_name), member=sub.group_id)
        data: Any
        if sub.item_id is None:
            data = [value for _, value in self.documents.items(coll)]
        else:
            data = self.documents.get(coll, sub.item_id)
        return protocol.sync(sub, data, seconds * 1000 + micros // 1000)

    def deliver(self, raw: str) -> int:
        """Queue one live message on every socket subscribed to its group or item; returns
        how many sockets it was queued on."""
        try:
            message = live_messages.parse(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a message on %s that is not a live message: %s",
                        self.keys.stream_live, exc)
            return 0
        group = self._targets.get((message.stream_name, message.group_id))
        item = self._targets.get((message.stream_name, message.group_id, message.item_id)) \
            if message.item_id is not None else None
        if not group and not item:
            return 0
        peers = (group | item) if group and item else (group or item)
        assert peers is not None
        text = protocol.encode(message.wrapper())
        # plain sockets (no compression) all get the same bytes: the frame is built once
        shared = text if self.compression else Frame.text(text)
        for peer in list(peers):
            peer.push(shared)
        return len(peers)

    def resync(self) -> None:
        """Send every subscription a fresh ``sync`` (after an outage), reading each group
        or item once."""
        by_target: dict[Target, list[tuple[Peer, Subscription]]] = {}
        for peer in list(self.peers):
            for sub in list(peer.subscriptions.values()):
                by_target.setdefault(sub.target, []).append((peer, sub))
        for pairs in by_target.values():
            try:
                text = self.sync(pairs[0][1])
            except BrokerUnavailable:
                return  # down again: the next reconnect syncs again
            for peer, sub in pairs:
                if peer.subscriptions.get(sub.subscription_id) == sub:
                    peer.push(text)

    # -- the one subscription --------------------------------------------------------------

    def _listen(self) -> None:
        backoff = Backoff()
        missed = False  # an outage since the last subscription: syncs are due
        channels = (self.keys.stream_live, self.keys.events)
        while not self._stopping.is_set():
            pubsub = self.store.pubsub()
            try:
                pubsub.subscribe(*channels)
                confirmed = 0
                while confirmed < len(channels):  # then every later PUBLISH reaches us
                    msg = pubsub.get_message(timeout=LISTEN_POLL_S)
                    if msg is not None and msg["type"] == "subscribe":
                        confirmed += 1
                self.subscribed.set()
                self.outage.recovered()
                backoff.reset()
                self.hooks.registry_changed()  # what changed meanwhile
                if missed:
                    missed = False
                    threading.Thread(target=self.resync, name="iii-stream-resync",
                                     daemon=True).start()
                while not self._stopping.is_set():
                    msg = pubsub.get_message(timeout=LISTEN_POLL_S)
                    if msg is None or msg["type"] != "message":
                        continue
                    if msg["channel"] == self.keys.stream_live:
                        self.deliver(msg["data"])
                    else:
                        self.hooks.registry_changed()
            except Exception as exc:  # noqa: BLE001 - an outage, or a bug we keep serving through
                self.subscribed.clear()
                missed = True
                if is_outage(exc):
                    self.outage.failed(exc)
                else:
                    log.exception("the stream listener failed; subscribing again")
                self._stopping.wait(backoff.next())
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
