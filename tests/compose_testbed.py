"""The docker-compose testbed as local processes: each mosquitto service becomes
a real mosquitto on a free loopback port, each fogmesh service runs its exact
command and environment (``fogmesh`` -> ``python -m fogmesh``, service host
names -> those ports, ``/app`` -> this checkout), in ``depends_on`` order.
No Docker engine needed, and what runs is what the compose file says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes

REPO = Path(__file__).resolve().parent.parent


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def start_order(services: dict) -> list[str]:
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in trail:
            raise ValueError(f"depends_on cycle: {' -> '.join(trail + (name,))}")
        deps = services[name].get("depends_on") or []
        for dep in (deps if isinstance(deps, list) else list(deps)):
            visit(dep, trail + (name,))
        order.append(name)
    for name in services:
        visit(name)
    return order


class ProcessTestbed:
    def __init__(self, compose: Path, workdir: Path) -> None:
        self.spec = load(compose)
        self.workdir = workdir
        self.brokers: dict[str, Mosquitto] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, service: str) -> str:
        return self.brokers[service].url

    def command(self, name: str) -> list[str]:
        svc = self.spec["services"][name]
        raw = svc["command"]
        text = raw if isinstance(raw, str) else shlex.join(raw)
        for broker, m in self.brokers.items():
            text = re.sub(rf"mqtt://{re.escape(broker)}:1883\b", f"mqtt://127.0.0.1:{m.port}", text)
        text = text.replace("/app/", f"{REPO}/")
        argv = shlex.split(text)
        if argv[0] != "fogmesh":
            raise ValueError(f"service {name}: only fogmesh commands run as processes, not {argv[0]!r}")
        return [sys.executable, "-m", "fogmesh", *argv[1:]]

    def environment(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        declared = self.spec["services"][name].get("environment") or {}
        if isinstance(declared, list):
            declared = dict(item.split("=", 1) for item in declared)
        env.update({k: str(v) for k, v in declared.items()})
        state = self.workdir / name       # each container has its own filesystem
        state.mkdir(parents=True, exist_ok=True)
        env["FOGMESH_STATE_DIR"] = str(state)
        return env

    def start(self) -> ProcessTestbed:
        services = self.spec["services"]
        for name in start_order(services):
            svc = services[name]
            if "mosquitto" in str(svc.get("image", "")):
                self.brokers[name] = Mosquitto().start()
                continue
            log = open(self.workdir / f"{name}.log", "wb")
            self.procs[name] = subprocess.Popen(self.command(name), env=self.environment(name),
                                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return self

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.procs.items()}

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_processes(self.procs.values())
        for m in self.brokers.values():
            m.cleanup()
