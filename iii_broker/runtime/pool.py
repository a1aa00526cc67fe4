"""The worker's handler threads: ThreadPoolExecutor's scheduling without its futures.

Every invocation is handed from the consumer thread to a handler thread. The standard
executor pays for a Future, a work item, two module locks and a pure-Python idle
semaphore on each hand-off, and nobody here reads the future. This pool keeps the same
rule for starting threads (a submit takes an idle thread if one is free, else starts a
new one up to ``max_workers``, so a handler blocked on a nested call never holds up the
next one) with one plain lock and one :class:`queue.SimpleQueue`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("iii.worker")


class HandlerPool:
    def __init__(self, max_workers: int, thread_name_prefix: str = "iii-handler") -> None:
        self._max = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no submit has claimed yet
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread; an exception it raises is logged."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.put((fn, args))
            if self._idle:
                self._idle -= 1
                return
            if len(self._threads) >= self._max:
                return  # the next thread to finish takes it
            thread = threading.Thread(target=self._run, daemon=True,
                                      name=f"{self._prefix}_{len(self._threads)}")
            self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        get, lock = self._queue.get, self._lock
        while True:
            item = get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - callers catch their own; never lose a thread
                log.exception("a pool call failed")
            del item, fn, args
            with lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; ``cancel_futures`` drops those not started; ``wait`` joins."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
