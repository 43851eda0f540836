"""What the tests need that pip cannot install, installed when missing.

README's test command runs this between ``pip install`` and ``pytest``::

    python -m pip install -q -e '.[test]' && python -m tests.prerequisites && python -m pytest

The tests start real brokers (mosquitto, RabbitMQ with its MQTT plugin, Aedes
on Node.js), drive third-party clients (MQTT.js; umqtt.simple on MicroPython,
whose unix port comes from pip), drive the dashboard in headless Chromium,
make certificates (openssl), verify systemd units
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

from fogmesh.broker.aedes import NPM_PREFIX, node_modules
from fogmesh.broker.rabbitmq import rabbitmq_available

MICROPYTHON_LIB = Path.home() / ".cache" / "fogmesh" / "micropython"
UMQTT = ("micropython-umqtt.simple", "1.3.4")      # micropython-lib's umqtt.simple, MIT, from PyPI
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
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
    Need(("podman", "runc", "mmdebstrap", "podman-compose"), "container kinds and the compose testbed run on "
         "podman (with runc); test images are built from Debian packages",
         _have("podman", "runc", "mmdebstrap", "podman-compose", also=("/usr/sbin",))),
    Need(("docker-registry",), "image kinds deployed from a registry on loopback", _have("docker-registry")),
    Need(("chromium",), "the dashboard's browser tests (driven by Playwright)",
         _have("chromium") if not shutil.which("chromium-browser") else _have("chromium-browser")),
)


def missing_packages() -> list[Need]:
    return [n for n in NEEDS if not n.present()]


def umqtt_path() -> Path:
    return MICROPYTHON_LIB / "umqtt" / "simple.py"


def fetch_umqtt() -> None:
    """umqtt.simple for the MicroPython firmware test, from its PyPI sdist
    (a MicroPython package: pip cannot install it into CPython)."""
    import io
    import json
    import tarfile
    import urllib.request
    name, version = UMQTT
    import hashlib
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as r:
        files = json.load(r)["releases"][version]
    url = next(f["url"] for f in files if f["packagetype"] == "sdist")
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != UMQTT_SHA256:
        raise SystemExit(f"{url}: not the file this test was written against (sha256 differs)")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("umqtt/simple.py"))
        source = tar.extractfile(member)
        assert source is not None
        umqtt_path().parent.mkdir(parents=True, exist_ok=True)
        umqtt_path().write_bytes(source.read())
    (MICROPYTHON_LIB / "umqtt" / "LICENSE").write_text(
        f"umqtt/simple.py: {name} {version} from PyPI, part of micropython-lib, MIT License.\n")


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
    if not umqtt_path().exists():
        print(f"fetching {UMQTT[0]} {UMQTT[1]} (PyPI) into {MICROPYTHON_LIB} for the MicroPython firmware test",
              flush=True)
        fetch_umqtt()
    if os.geteuid() != 0:
        print("note: the disk-fault tests mount a small tmpfs and need root; as another user they fail",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
