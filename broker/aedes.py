"""Launch an Aedes broker (npm ``aedes``, a Node.js MQTT broker without shared
subscriptions) on a free loopback port: one of the brokers agents split tasks
on with claims. Used by the tests and the fault suite.

Aedes is found in ``$FOGMESH_NODE_MODULES`` or ``~/.cache/fogmesh/node/node_modules``
(``npm install --prefix ~/.cache/fogmesh/node aedes@0.51``; the test command does it:
``tests/prerequisites.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fogmesh.broker.ports import free_port, wait_port
from fogmesh.broker.processes import stop_processes
from fogmesh.errors import BrokerError

SCRIPT = Path(__file__).with_name("aedes_broker.js")
NPM_PREFIX = Path.home() / ".cache" / "fogmesh" / "node"


def node_modules() -> Path:
    env = os.environ.get("FOGMESH_NODE_MODULES")
    return Path(env) if env else NPM_PREFIX / "node_modules"


def aedes_available() -> bool:
    return shutil.which("node") is not None and (node_modules() / "aedes").is_dir()


class Aedes:
    """One Aedes process: ``start()``, ``stop()`` (SIGTERM), ``kill()`` (SIGKILL)."""

    def __init__(self, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Aedes:
        if not aedes_available():
            raise BrokerError(f"Aedes is not installed: install Node.js and run `npm install --prefix "
                              f"{NPM_PREFIX} aedes@0.51` (or point $FOGMESH_NODE_MODULES at a node_modules "
                              "with aedes)")
        self.proc = subprocess.Popen(["node", str(SCRIPT), str(self.port)],
                                     env={**os.environ, "NODE_PATH": str(node_modules())},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.host, self.port, timeout):
            self.kill()
            raise BrokerError(f"aedes did not listen on {self.host}:{self.port} within {timeout:g} s")
        return self

    def stop(self) -> None:
        stop_processes([self.proc])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
