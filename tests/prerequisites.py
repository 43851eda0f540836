"""What the tests need that pip cannot install, installed when missing.

README's test command runs this between ``pip install`` and ``pytest``::

    python -m pip install -q -e '.[test]' && python -m tests.prerequisites && python -m pytest

The tests start real brokers (mosquitto, RabbitMQ with its MQTT plugin, Aedes
on Node.js), drive a third-party client (MQTT.js), make certificates (openssl), verify systemd units
(systemd-analyze) and mount small tmpfs disks (root). On Debian or Ubuntu as
root, what is missing is installed with apt-get and npm; anywhere else this
stops at once (exit 2) with the one command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from broker.aedes import NPM_PREFIX, node_modules
from broker.rabbitmq import rabbitmq_available

NPM_PACKAGES = {"aedes": "aedes@0.51", "mqtt": "mqtt@5"}    # a broker; MQTT.js, a third-party client


def _have(*commands: str, also: tuple[str, ...] = ()) -> Callable[[], bool]:
    return lambda: all(shutil.which(c) or any(Path(d, c).exists() for d in also) for c in commands)


@dataclass(frozen=True)
class Need:
    packages: tuple[str, ...]
    why: str
    present: Callable[[], bool]


NEEDS = (
    Need(("mosquitto", "mosquitto-clients"), "the integration tests' broker and the contract tests' clients",
         _have("mosquitto", "mosquitto_pub", "mosquitto_sub", also=("/usr/sbin",))),
    Need(("openssl",), "the security tests make a CA and certificates", _have("openssl")),
    Need(("systemd",), "systemd-analyze verify of the generated service units", _have("systemd-analyze")),
    Need(("rabbitmq-server",), "a broker without shared subscriptions (claim dispatch)", rabbitmq_available),
    Need(("nodejs", "npm"), "the Aedes broker runs on Node.js", _have("node", "npm")),
)


def missing_packages() -> list[Need]:
    return [n for n in NEEDS if not n.present()]


def _run(cmd: list[str]) -> None:
    print("  $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def main() -> int:
    missing = missing_packages()
    npm_missing = [spec for name, spec in NPM_PACKAGES.items() if not (node_modules() / name).is_dir()]
    packages = [p for n in missing for p in n.packages]
    npm_cmd = ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(NPM_PREFIX), *npm_missing]
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if packages and not can_install:
        print("the tests need what pip cannot install:", file=sys.stderr)
        for n in missing:
            print(f"  {' '.join(n.packages)}: {n.why}", file=sys.stderr)
        steps = [f"sudo apt-get install -y {' '.join(packages)}"] + ([" ".join(npm_cmd)] if npm_missing else [])
        print(f"install them with:\n  {' && '.join(steps)}\nthen run the test command again", file=sys.stderr)
        return 2
    if packages:
        print(f"installing for the tests: {', '.join(packages)}", flush=True)
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "install", "-y", "-qq", *packages])
    if npm_missing:
        print(f"installing {', '.join(npm_missing)} (npm) into {NPM_PREFIX} for the Aedes broker and "
              "MQTT.js client tests", flush=True)
        _run(npm_cmd)
    if os.geteuid() != 0:
        print("note: the disk-fault tests mount a small tmpfs and need root; as another user they fail",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
