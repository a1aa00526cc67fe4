// A small browser client for iii's stream protocol: one WebSocket, many subscriptions.
// No build step and no dependency: <script src="iii-stream.js"></script> defines `IIIStream`.
//
//   const streams = new IIIStream("ws://localhost:3112/");
//   const todos = streams.subscribe({ streamName: "todo", groupId: "inbox" }, {
//     onChange: (items) => render(items),       // a group: its items; an item: its value or null
//     onEvent: (name, data) => console.log(name, data),   // stream::send's custom events
//     onUnauthorized: () => console.warn("refused"),
//   });
//   todos.close();    // leave;  streams.close() closes the socket for good
//
// The client keeps each subscription's state from `sync`, `create`, `update` and `delete`,
// drops a change older than the last one it saw for that item (timestamps only grow per
// item), and reconnects with exponential backoff, joining its subscriptions again (each
// answered with a fresh `sync`). A group's items are told apart by the `id` field of their
// data (the wrapper's `id` for changes), as in iii: store the item id in the item.
(function (root) {
  "use strict";

  let counter = 0;
  const newId = () => `sub-${Date.now().toString(36)}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;

  class Subscription {
    constructor(client, target, handlers) {
      this.client = client;
      this.target = { subscriptionId: newId(), ...target };  // {subscriptionId, streamName, groupId, id?}
      this.handlers = handlers;
      this.isItem = target.id !== undefined && target.id !== null;
      this.items = new Map();   // a group's items by id, in arrival order
      this.value = null;        // an item subscription's value
      this.seen = new Map();    // item id -> timestamp of the last change applied
      this.floor = 0;           // timestamp of the last sync: older changes are already in it
      this.refused = false;
    }

    /** The current state: a group's items (a list) or the item's value (null when absent). */
    get state() {
      return this.isItem ? this.value : Array.from(this.items.values());
    }

    /** Leave: the server stops sending this subscription's events. */
    close() {
      this.client._leave(this);
    }

    _matches(msg) {
      const t = this.target;
      if (msg.streamName !== t.streamName || msg.groupId !== t.groupId) return false;
      if (this.isItem) return msg.id === t.id;
      return msg.event.type !== "sync" || msg.id === null || msg.id === undefined;
    }

    _handle(msg) {
      const ev = msg.event;
      const ts = Number(msg.timestamp) || 0;
      switch (ev.type) {
        case "sync":
          this.floor = ts;
          this.seen.clear();
          if (this.isItem) this.value = ev.data ?? null;
          else this.items = new Map((ev.data || []).map((item, i) => [keyOf(item, i), item]));
          return this._changed();
        case "create":
        case "update":
        case "delete": {
          const key = this.isItem ? this.target.id : msg.id ?? keyOf(ev.data);
          if (ts < this.floor || ts < (this.seen.get(key) ?? 0)) return;  // stale: drop it
          this.seen.set(key, ts);
          if (this.isItem) this.value = ev.type === "delete" ? null : ev.data;
          else if (ev.type === "delete") this.items.delete(key);
          else this.items.set(key, ev.data);
          return this._changed();
        }
        case "event":
          return this.handlers.onEvent?.(ev.event?.type, ev.event?.data);
        case "unauthorized":
          this.refused = true;
          return this.handlers.onUnauthorized?.();
      }
    }

    _changed() {
      this.handlers.onChange?.(this.state);
    }
  }

  function keyOf(item, fallback) {
    return item && typeof item === "object" && "id" in item ? String(item.id) : String(fallback);
  }

  class IIIStream {
    /**
     * @param {string} url  the stream server's WebSocket URL, e.g. "ws://localhost:3112/"
     * @param {{minDelayMs?: number, maxDelayMs?: number, onStatus?: (status: string) => void}} options
     *   reconnect backoff bounds (default 250 ms, doubled up to 10 s, with jitter) and a
     *   callback told "open", "closed" (will reconnect) or "stopped" (after close()).
     */
    constructor(url, options = {}) {
      this.url = url;
      this.minDelayMs = options.minDelayMs ?? 250;
      this.maxDelayMs = options.maxDelayMs ?? 10000;
      this.onStatus = options.onStatus ?? (() => {});
      this.subs = new Map();   // subscriptionId -> Subscription
      this.delayMs = this.minDelayMs;
      this.stopped = false;
      this.ws = null;
      this._connect();
    }

    /**
     * Join a group (`{streamName, groupId}`) or one item (`{streamName, groupId, id}`).
     * Handlers: onChange(state), onEvent(name, data), onUnauthorized().
     */
    subscribe(target, handlers = {}) {
      const sub = new Subscription(this, target, handlers);
      this.subs.set(sub.target.subscriptionId, sub);
      this._send({ type: "join", data: sub.target });
      return sub;
    }

    /** Leave every subscription and close the socket for good. */
    close() {
      this.stopped = true;
      for (const sub of this.subs.values()) this._leave(sub);
      clearTimeout(this.timer);
      this.ws?.close(1000);
      this.onStatus("stopped");
    }

    _leave(sub) {
      if (this.subs.delete(sub.target.subscriptionId)) this._send({ type: "leave", data: sub.target });
    }

    _send(message) {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
      // otherwise: joined (again) when the socket opens, and a leave needs no socket
    }

    _connect() {
      const ws = (this.ws = new WebSocket(this.url));
      ws.onopen = () => {
        this.delayMs = this.minDelayMs;
        this.onStatus("open");
        for (const sub of this.subs.values()) {
          if (!sub.refused) ws.send(JSON.stringify({ type: "join", data: sub.target }));
        }
      };
      ws.onmessage = (e) => {
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch {
          return;  // not ours to handle
        }
        if (msg?.type !== "stream" || !msg.event) return;  // e.g. an error report
        for (const sub of this.subs.values()) if (sub._matches(msg)) sub._handle(msg);
      };
      ws.onclose = () => {
        if (this.ws !== ws || this.stopped) return;
        this.onStatus("closed");
        const delay = this.delayMs * (0.5 + Math.random() / 2);
        this.delayMs = Math.min(this.delayMs * 2, this.maxDelayMs);
        this.timer = setTimeout(() => this._connect(), delay);
      };
    }
  }

  root.IIIStream = IIIStream;
})(globalThis);
