"""What the deployment tests share: a signing key and bundles made with the
real CLI, agents as ``fogmesh agent`` processes with their own state
directories, a watcher of the retained reports, and ``fogmesh deploy`` run
as the operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from fogmesh.bench.wheels import plant_wheels
from fogmesh.mqtt import MqttClient

FOGMESH = [sys.executable, "-m", "fogmesh"]


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FOGMESH, *args], capture_output=True, text=True, timeout=timeout, check=False)


def make_key(where: Path, name: str = "ops.key") -> tuple[Path, Path]:
    key = where / name
    done = cli("bundle", "keygen", "--out", str(key))
    assert done.returncode == 0, done.stderr
    return key, where / f"{name}.pub"


def make_bundle(where: Path, version: str, *, key: Path | None, broken: bool | str = False, padding: int = 0,
                tag: str = "py3-none-any", chunk_kb: int = 64) -> Path:
    wheels = plant_wheels(where / f"wheels-{version}", version, broken=broken, padding=padding, tag=tag)
    out = where / f"plantcare-{version}.fogbundle"
    args = ["bundle", "build", *map(str, wheels), "--health", 'plant={"moisture": 1}', "--out", str(out),
            "--chunk-kb", str(chunk_kb)]
    if key is not None:
        args += ["--sign", str(key)]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return out


@dataclass
class AgentProcess:
    agent_id: str
    proc: subprocess.Popen[bytes]
    state_dir: Path
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def staged(self) -> list[Path]:
        return [p for d in self.state_dir.glob("deploy-*/staging") for p in d.iterdir()]

    def envs(self) -> list[str]:
        return sorted(p.name for d in self.state_dir.glob("deploy-*/envs") for p in d.iterdir())


@dataclass
class Fleet:
    url: str
    root: str
    tmp: Path
    pub: Path
    agents: dict[str, AgentProcess] = field(default_factory=dict)

    def start(self, agent_id: str, *extra: str, url: str | None = None) -> AgentProcess:
        state = self.tmp / f"state-{agent_id}"
        state.mkdir(exist_ok=True)
        log = self.tmp / f"{agent_id}.log"
        proc = subprocess.Popen([*FOGMESH, "agent", "--id", agent_id, "--broker", url or self.url, "--root", self.root,
                                 "--trust-key", str(self.pub), "--presence-period", "1", "--concurrency", "1",
                                 "--log-level", "INFO", *extra],
                                stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                                env={**os.environ, "FOGMESH_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"})
        self.agents[agent_id] = a = AgentProcess(agent_id, proc, state, log)
        return a

    def stop(self, agent_id: str) -> None:
        a = self.agents.pop(agent_id)
        a.proc.terminate()
        a.proc.wait(20)

    def stop_all(self) -> None:
        for agent_id in list(self.agents):
            self.stop(agent_id)

    def deploy(self, *args: str, key: Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        extra = ["--key", str(key)] if key is not None else []
        return cli("deploy", *args, *extra, "--broker", self.url, "--root", self.root, timeout=timeout)


class Reports:
    """Every retained report as it changes (``seen``: each one, in order)."""

    def __init__(self, url: str, root: str) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self.seen: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.client = MqttClient(url, on_message=self._on_message)
        self.client.start()
        self.client.subscribe(f"{root}/deploy/reported/+")

    def _on_message(self, m: Any) -> None:
        if not m.payload:
            return
        r = json.loads(m.payload)
        with self._cond:
            self.latest[r["agent"]] = r
            self.seen.append(r)
            self._cond.notify_all()

    def wait(self, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.latest):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"reports never got there: {json.dumps(self.latest, indent=1)[-3000:]}")
                self._cond.wait(left)
            return dict(self.latest)

    def wait_seen(self, check: Callable[[dict[str, Any]], bool], timeout: float = 60.0, *,
                  since: int = 0) -> dict[str, Any]:
        """The first report seen (not only the latest; from the ``since``-th on) for which ``check`` holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((r for r in self.seen[since:] if check(r)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such report among {json.dumps(self.seen[-5:], indent=1)}")
                self._cond.wait(left)

    def wait_state(self, agent: str, state: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(lambda r: r.get(agent, {}).get("state") == state, timeout)[agent]

    def close(self) -> None:
        self.client.stop()


def running(version: str) -> Callable[[dict[str, Any]], bool]:
    """A report says ``version`` of plantcare runs."""
    return lambda r: r.get("bundles", {}).get("plantcare", {}).get("version") == version and r["state"] == "running"


def fleet_of(broker: Any, root: str, tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Fleet]:
    """The body of each deployment module's ``fleet`` fixture."""
    f = Fleet(broker.url, root, tmp_path, keys[1])
    yield f
    f.stop_all()


def reports_of(broker: Any, root: str) -> Iterator[Reports]:
    """The body of each deployment module's ``reports`` fixture."""
    r = Reports(broker.url, root)
    yield r
    r.close()
