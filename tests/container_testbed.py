"""The docker-compose testbed in real containers, on podman with podman-compose.

What runs is ``docker-compose.yml`` as a Docker user runs it, built from
``Dockerfile`` (on stand-in base images: tests/standin_images.py), with three
changes written to a copy, all about where it may reach:

* its network is ``internal``: containers talk only to each other, and no
  traffic leaves the machine (no route out, no NAT);
* so published ports would not work either, and are dropped: the test
  reaches the brokers at their container addresses on that network's bridge,
  which exists on this host only while the test runs;
* relative paths (the build context, the broker's config) become absolute.

podman-compose 1.0.3 (Debian 12) neither waits for ``condition:
service_healthy`` nor runs health checks on a timer without systemd, so
:meth:`ContainerTestbed.wait_healthy` runs them (``podman healthcheck run``)
until each passes; fogmesh's processes reconnect until their broker is up.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.compose_testbed import REPO


class ContainerTestbed:
    def __init__(self, compose: Path, workdir: Path) -> None:
        self.project = f"fmtest{uuid.uuid4().hex[:6]}"
        self.spec = yaml.safe_load(compose.read_text())
        self.workdir = workdir
        self.file = workdir / "docker-compose.yml"
        self._write_copy()

    def _write_copy(self) -> None:
        spec: dict[str, Any] = yaml.safe_load(yaml.safe_dump(self.spec))
        for svc in spec["services"].values():
            svc.pop("ports", None)
            if svc.get("build") == ".":
                svc["build"] = str(REPO)
            if "volumes" in svc:
                svc["volumes"] = [str(REPO / v[2:].split(":", 1)[0]) + ":" + v.split(":", 1)[1]
                                  if v.startswith("./") else v for v in svc["volumes"]]
        spec["networks"] = {"default": {"internal": True}}
        self.file.write_text(yaml.safe_dump(spec, sort_keys=False))

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman-compose", "-p", self.project, "-f", str(self.file), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.workdir)
        if done.returncode != 0:
            raise RuntimeError(f"podman-compose {' '.join(args)} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        return done

    def up(self) -> ContainerTestbed:
        # One build (every fogmesh service names the same image), then up.
        subprocess.run(["podman", "build", "-q", "-t", self.spec["x-fogmesh"]["image"], str(REPO)],
                       check=True, capture_output=True, timeout=600)
        self.compose("up", "-d")
        return self

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def inspect(self, service: str, template: str) -> str:
        return subprocess.run(["podman", "inspect", "--format", template, self.container(service)],
                              capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    def address(self, service: str) -> str:
        return self.inspect(service, f"{{{{.NetworkSettings.Networks.{self.project}_default.IPAddress}}}}")

    def url(self, service: str) -> str:
        return f"mqtt://{self.address(service)}:1883"

    def healthy(self, service: str) -> bool:
        if "healthcheck" not in self.spec["services"][service]:
            return self.inspect(service, "{{.State.Running}}") == "true"
        return subprocess.run(["podman", "healthcheck", "run", self.container(service)],
                              capture_output=True, timeout=60).returncode == 0

    def wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(self.spec["services"])
        while waiting and time.monotonic() < deadline:
            waiting = {s for s in waiting if not self.healthy(s)}
            if waiting:
                time.sleep(1.0)                      # health checks take their own time; poll again
        if waiting:
            raise TimeoutError(f"services not healthy within {timeout:g} s: {sorted(waiting)}; "
                               + " | ".join(f"{s}: {self.logs(s)[-400:]}" for s in sorted(waiting)))

    def kill(self, service: str) -> int:
        """SIGKILL the service's main process from the host, as a crash would
        (``podman kill`` counts as stopped by the user: no restart). Its PID."""
        pid = int(self.inspect(service, "{{.State.Pid}}"))
        os.kill(pid, 9)
        return pid

    def restarts(self, service: str) -> int:
        return int(self.inspect(service, "{{.RestartCount}}"))

    def logs(self, service: str) -> str:
        done = subprocess.run(["podman", "logs", self.container(service)], capture_output=True, text=True,
                              timeout=60)
        return done.stdout + done.stderr

    def down(self) -> None:
        try:
            self.compose("down", "-v", timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        subprocess.run(["podman", "network", "rm", "-f", f"{self.project}_default"], capture_output=True,
                       timeout=60)
