"""Child processes that die with the process that started them.

``iii-broker up`` runs the engine, a worker, the web process and perhaps an embedded
Valkey server. When ``up`` is killed before it can stop them (SIGKILL, the OOM killer),
they must not run on holding their ports. On Linux each child asks the kernel, between
fork and exec, for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so it
stops as on Ctrl-C: workers drain, gunicorn lets running requests finish, and gunicorn's
own worker processes follow their master (they watch its pid). The signal comes when the
*thread* that started the child exits, so children are started from the main thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when this
    process (the thread calling Popen) exits. None where the platform has no ``prctl``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: nothing that locks
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would come
            os.kill(os.getpid(), sig)

    return preexec
