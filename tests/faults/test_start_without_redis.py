"""No Redis at start: the engine, the worker and the web process each fail fast with one
line naming the (masked) URL, and no traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers import ROOT, bin_cmd, free_port


@pytest.mark.parametrize("command", [
    ["iii-broker", "engine"],
    ["iii-broker", "web"],
    ["iii-worker", "-A", "tests.apps.basic"],
])
def test_a_process_started_without_redis_says_so_in_one_line_and_exits(command):
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(III_BROKER_URL=url, III_REDIS_URL=url, III_HTTP_PORT=str(free_port()))
    done = subprocess.run(bin_cmd(*command), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{command[0]}: ") and "cannot reach Redis at" in lines[0]
    assert "secret" not in done.stderr and "***" in lines[0]
