"""iii's own SDKs — Python ``iii-sdk`` from PyPI and Node ``iii-sdk`` from npm, unmodified —
as workers of a real cluster through ``iii-broker gateway``.

The SDK workers are ``sdk/worker.py`` and ``node/worker.mjs`` (beside the Node packages it
imports; the same functions, registered as ``<prefix>::<name>``), run with ``HOME`` in the test's directory
(the SDKs write ``~/.iii/run`` files) and without the cluster's ``III_*`` variables (the
SDKs read some of them). The Node packages are those of ``node/package-lock.json``:
the ``node`` fixture installs them (``npm ci``) when they are missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from iii_broker import Settings
from tests.conftest import Cluster
from tests.helpers import Proc, delete_namespace, dump, python_cmd, wait_for

HERE = Path(__file__).resolve().parent
SDK_DIR = HERE / "sdk"
NODE_DIR = HERE / "node"
NODE_SDK_VERSION = "0.22.1"
RUNTIMES = ("python", "node")
PREFIXES = {"python": "py", "node": "node"}
FUNCTIONS = ("echo", "fail", "call", "nested", "flaky", "slow", "log", "hello")
"""What each SDK worker script registers (``<prefix>::<name>``)."""
KOMBU_APP = "tests.apps.gateway_app"
NODE_MISSING = ("the Node SDK tests need Node.js 20+ and npm on PATH (e.g. `apt-get install nodejs "
                "npm`, or https://nodejs.org/en/download); the suite then installs the SDK itself "
                "(`npm ci --prefix tests/gateway/node`)")


# -- the Node SDK -------------------------------------------------------------------------


def node_packages_installed() -> bool:
    try:
        found = json.loads((NODE_DIR / "node_modules" / "iii-sdk" / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return found.get("version") == NODE_SDK_VERSION and (NODE_DIR / "node_modules" / "@iii-dev"
                                                         / "helpers" / "package.json").exists()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``node`` executable, with tests/gateway/node's packages installed (``npm ci``
    when they are missing). Without Node.js and npm: a failure in CI (``CI`` set), else a skip."""
    node_bin, npm = shutil.which("node"), shutil.which("npm")
    problem = None if node_bin and npm else NODE_MISSING
    if node_bin and npm:
        version = subprocess.run([node_bin, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
        if not re.fullmatch(r"v(\d+)\..*", version) or int(version[1:].split(".")[0]) < 20:
            problem = f"{NODE_MISSING}; found node {version or '(no version)'}"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert node_bin is not None and npm is not None
    # pytest-xdist's workers share the parent of their temp dirs: one npm ci at a time.
    lock_path = tmp_path_factory.getbasetemp().parent / "iii-gateway-npm-ci.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not node_packages_installed():
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not node_packages_installed():
                pytest.fail(f"npm ci in {NODE_DIR} failed ({done.returncode}):\n"
                            f"{done.stdout}\n{done.stderr}")
    return node_bin


# -- SDK workers --------------------------------------------------------------------------


@dataclass
class Sdk:
    """A running SDK worker script."""

    runtime: str
    prefix: str
    name: str
    proc: Proc

    def fid(self, name: str) -> str:
        return f"{self.prefix}::{name}"


def sdk_env(home: Path, url: str, **extra: str) -> dict[str, str]:
    """An SDK process's environment: the test run's, without ``III_*`` (the SDKs read
    ``III_URL``, ``III_TOKEN``, ``III_NAMESPACE``...), with ``HOME`` in the test's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", III_URL=url, **extra)
    return env


def start_sdk(cluster: Cluster, runtime: str, url: str, *, prefix: str | None = None,
              wait: bool = True, otel: bool = False, **extra_env: str) -> Sdk:
    """Run ``sdk/worker.py`` or ``node/worker.mjs`` against the gateway at ``url`` (the
    ``node`` fixture must have run for ``node``); with ``wait``, until its functions are
    live in the cluster. ``otel``: with the SDK's telemetry on (its default; off here
    unless a test looks at it, since its exporters cost each SDK process CPU the rest of
    the suite, running beside, would feel)."""
    if not otel:
        extra_env.setdefault("OTEL_ENABLED", "false")
    prefix = prefix or PREFIXES[runtime]
    name = f"{prefix}-worker-{uuid.uuid4().hex[:6]}"
    if runtime == "python":
        cmd = python_cmd(str(SDK_DIR / "worker.py"))
    else:
        cmd = [shutil.which("node") or "node", str(NODE_DIR / "worker.mjs")]
    env = sdk_env(cluster.log_dir / f"home-{prefix}-{uuid.uuid4().hex[:6]}", url,
                  SDK_PREFIX=prefix, III_WORKER_NAME=name, **extra_env)
    proc = Proc(f"sdk-{prefix}", cmd, env, cluster.log_dir)
    cluster.procs.append(proc)
    sdk = Sdk(runtime, prefix, name, proc)
    if wait:
        wait_live(cluster, sdk)
    return sdk


def wait_listening(cluster: Cluster, gateway: Proc, timeout: float = 20) -> None:
    """Wait until a gateway started with ``wait=False`` takes connections."""
    port = int(gateway.url.rsplit(":", 1)[1])  # type: ignore[attr-defined]

    def listening() -> bool:
        assert gateway.popen.poll() is None, f"gateway exited early:\n{gateway.output()}"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_for(listening, timeout=timeout, what=f"the gateway to listen on {port}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{dump(cluster.procs)}") from None


def wait_live(cluster: Cluster, sdk: Sdk, timeout: float = 30) -> None:
    """Wait until the script said READY, all its functions are live in the cluster and its
    worker is listed with what the SDK announced (its pid: the announcement may come after
    the functions)."""
    r = redis.Redis.from_url(cluster.settings.redis_url, decode_responses=True)
    key = f"{cluster.settings.namespace}:functions"

    def live() -> bool:
        assert sdk.proc.popen.poll() is None, f"{sdk.proc.name} exited early:\n{sdk.proc.output()}"
        if "READY" not in sdk.proc.output():
            return False
        return all(r.sismember(key, sdk.fid(f)) for f in FUNCTIONS) and \
            bool(workers_of(cluster, sdk.proc.pid))
    try:
        wait_for(live, timeout=timeout, what=f"the {sdk.runtime} SDK worker's functions to be live")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{dump(cluster.procs)}") from None
    finally:
        r.close()


def workers_of(cluster: Cluster, pid: int) -> list[dict[str, Any]]:
    """The registry's workers whose process is ``pid``."""
    workers = cluster.trigger("engine::workers::list", {}, timeout_ms=5000)["workers"]
    return [w for w in workers if w.get("pid") == pid]


def records(cluster: Cluster) -> list[str]:
    """What ``gw::record`` recorded (tests/apps/gateway_app.py), oldest first."""
    r = redis.Redis.from_url(cluster.settings.redis_url, decode_responses=True)
    try:
        return [str(x) for x in r.lrange(f"{cluster.settings.namespace}:test:gw", 0, -1)]
    finally:
        r.close()


def tag() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


# -- clusters -----------------------------------------------------------------------------


def new_cluster(redis_url: str, log_dir: Path) -> Cluster:
    """A :class:`Cluster` in a namespace of its own, for a module's tests."""
    settings = Settings(broker_url=redis_url, redis_url=redis_url,
                        namespace=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval_s=0.3,
                        default_timeout_ms=10_000)
    return Cluster(settings, log_dir)


@contextmanager
def module_cluster(redis_url: str, log_dir: Path) -> Iterator[Cluster]:
    cluster = new_cluster(redis_url, log_dir)
    try:
        yield cluster
    except Exception:
        print(dump(cluster.procs))
        raise
    finally:
        cluster.close()
        delete_namespace(redis_url, cluster.settings.namespace)


@pytest.fixture(autouse=True)
def logs_of_a_shared_cluster_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test of a module sharing a cluster prints the cluster's process logs (as
    conftest's ``cluster`` fixture does for a test's own)."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    for name, value in request.node.funcargs.items():
        shared = getattr(value, "cluster", None)
        if name != "cluster" and isinstance(shared, Cluster):
            print(dump(shared.procs))
            return


def post_json(port: int, path: str, body: Any, timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    """POST ``body`` as JSON to the web process; (status, headers, decoded body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = raw.decode(errors="replace")
        return exc.code, dict(exc.headers), decoded


# -- raw WebSocket connections --------------------------------------------------------------


def raw_connect(url: str, **kwargs: Any) -> ClientConnection:
    """A bare WebSocket to the gateway (no SDK), as a misbehaving client would open it
    (use it as a context manager)."""
    return connect(url, open_timeout=5, close_timeout=2, max_size=None, **kwargs)


def recv_json(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame = ws.recv(timeout=timeout)
    assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
    decoded = json.loads(frame)
    assert isinstance(decoded, dict)
    return decoded
