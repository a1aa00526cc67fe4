"""The Procfile: ``honcho start`` in the repository root runs the engine and a worker."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, Proc, call_add, wait_for

BIN = Path(sys.executable).parent


def processes_of(namespace: str) -> dict[int, str]:
    """Every live process started with ``III_NAMESPACE=namespace``: pid -> command line."""
    marker = f"III_NAMESPACE={namespace}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:  # a zombie has already exited
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
                        b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def test_the_procfile_names_an_engine_a_quickstart_worker_a_beat_and_a_stream_process():
    entries = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert entries["engine"].split() == ["iii-broker", "engine"]
    assert entries["worker"].split() == ["iii-worker", "-A", "examples.quickstart"]
    assert entries["beat"].split() == ["iii-broker", "beat"]
    assert entries["stream"].split() == ["iii-broker", "stream"]


@pytest.mark.skipif(shutil.which("honcho", path=str(BIN)) is None and shutil.which("honcho") is None,
                    reason="honcho is not installed (pip install -e '.[test]')")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_honcho_start_runs_the_app_and_a_signal_stops_every_process(settings, store, tmp_path, sig):
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(settings.child_env(), PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    honcho = shutil.which("honcho", path=str(BIN)) or shutil.which("honcho")
    proc = Proc("honcho", [honcho, "start"], env, tmp_path)
    try:
        call_add(settings, proc)
        running = processes_of(settings.namespace)
        commands = " | ".join(running.values())
        assert "iii-broker engine" in commands and "iii-worker -A examples.quickstart" in commands

        proc.signal(sig)
        proc.wait(timeout=30)
        wait_for(lambda: not processes_of(settings.namespace), timeout=10,
                 what=f"every process of the Procfile to exit: {processes_of(settings.namespace)}")
        out = proc.output()
        assert "engine.1 stopped" in out and "worker.1 stopped" in out
        assert "draining" in out  # the worker was stopped gracefully, not killed
        assert store.zcard(f"{settings.namespace}:workers") == 0
    finally:
        proc.stop()
        for pid in processes_of(settings.namespace):  # never leave strays behind
            os.kill(pid, signal.SIGKILL)
