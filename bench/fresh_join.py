"""``fogmesh bench footprint``'s install part: a fresh venv to a joined,
online agent, the way docs/raspberry-pi.md grows a site, timed step by step.

The site is made first and not timed (it exists before a new box comes):
the shipped secure configuration (``python -m fogmesh.broker.secure
--operator ops --fleet``) on mosquitto (TLS, logins, ACL, re-read on SIGHUP)
or on the embedded broker (``fogmesh broker --auth DIR``), the registrar
(``fogmesh fleet serve``) online, the operator's key. Then, timed:

1. ``python -m venv V`` (pip seeded into it);
2. ``V/bin/pip install SOURCE``: this checkout, copied first (setuptools
   writes build/ and *.egg-info into the tree it builds) and installed as a
   user gets it, not editable; dependencies from the index (pip's usual
   configuration and cache, or none with ``--no-pip-cache``);
3. ``fogmesh fleet enroll`` on the operator's side (this interpreter): one token;
4. ``V/bin/fogmesh join TOKEN`` (its ``fogmesh doctor`` included);
5. the agent started as ``fogmesh join`` says, until its retained presence
   on the broker says ``online`` (read by an operator's subscription to
   ``presence/+``).

The venv's site-packages is measured (:mod:`.install_size`) between steps 2
and 3, off the clock. Every command runs in an empty directory, so nothing
of a checkout is imported by accident.
"""

from __future__ import annotations

import glob
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fogmesh import codec
from fogmesh.announcements import Presence
from fogmesh.broker.processes import stop_processes
from fogmesh.identities import RegistrarInfo
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics

from .install_size import InstallSize
from .install_size import measure as measure_size

BOX_ID = "footprint-pi"
STEP_TIMEOUT_S = 900.0
COPY_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "node_modules",
                                     ".pytest_cache", ".mypy_cache", ".ruff_cache")


@dataclass
class JoinTiming:
    broker: str               # "mosquitto" (TLS) or "embedded"
    source: str
    pip: str                  # the fresh venv's pip
    pip_cache: bool
    venv_s: float
    install_s: float
    enroll_s: float
    join_s: float             # fogmesh join, its doctor included
    online_s: float           # the agent's start to its retained presence online
    total_s: float
    doctor: str               # the summary line of the doctor that fogmesh join ran
    join_status: int
    #: where pip took the distributions it installed, by URL scheme ("https": downloaded;
    #: "file": a directory or mirror on this machine's disk), from ``pip install --report``
    fetched: dict[str, int]


@dataclass
class FreshInstall:
    size: InstallSize
    timing: JoinTiming


def find_source() -> Path | None:
    """The checkout this fogmesh runs from (an editable install), or None (installed from a wheel)."""
    here = Path(__file__).resolve().parent.parent
    project = here / "pyproject.toml"
    return here if project.is_file() and 'name = "fogmesh"' in project.read_text() else None


def fetched_from(report: Path) -> dict[str, int]:
    """How many distributions ``pip install --report`` says came from each kind of place."""
    doc = codec.decode(report.read_bytes())
    counts: dict[str, int] = {}
    for item in doc.get("install", []) if isinstance(doc, dict) else []:
        url = str((item.get("download_info") or {}).get("url", ""))
        scheme = url.split(":", 1)[0] if ":" in url else "?"
        counts[scheme] = counts.get(scheme, 0) + 1
    return counts


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, **extra}


def _run(cmd: list[str], *, what: str, cwd: Path, env: dict[str, str] | None = None,
         ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    if done.returncode not in ok:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{what} failed (exit status {done.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return done


class _Site:
    """The site a new box joins: a secured broker, the operator's key, the registrar online."""

    def __init__(self, kind: str, work: Path) -> None:
        from fogmesh.broker.secure import Logins, generate
        from fogmesh.deploy.signing import SigningKey
        self.kind, self.work = kind, work
        self.root = f"bench/{uuid.uuid4().hex[:8]}"
        self.topics = Topics(self.root)
        # its own directory, not under the 0700 work directory: mosquitto drops to its own user to read it
        self.out = Path(tempfile.mkdtemp(prefix="fogmesh-footprint-site-"))
        generate(self.out, Logins(operators=("ops",), fleet=True, root=self.root), hosts=["localhost", "127.0.0.1"])
        self.key = work / "ops.key"
        SigningKey.generate().save(self.key)
        self.broker: Any = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.watcher: MqttClient | None = None

    def url(self, login: str) -> str:
        pw = self.out / "credentials" / f"{login}.password"
        if self.kind == "mosquitto":
            return f"mqtts://{login}@127.0.0.1:{self.broker.port}?ca={self.out / 'ca.crt'}&password_file={pw}"
        return f"mqtt://{login}@127.0.0.1:{self.broker.port}?password_file={pw}"

    def start(self) -> _Site:
        reload: list[str] = []
        if self.kind == "mosquitto":
            from fogmesh.broker.mosquitto import Mosquitto
            self.broker = Mosquitto(secure_dir=self.out).start()
            (self.out / "mosquitto.pid").write_text(str(self.broker.proc.pid))
            reload = ["--reload-pid-file", str(self.out / "mosquitto.pid")]
        else:
            from fogmesh.broker.embedded import EmbeddedBroker
            from fogmesh.broker.ports import free_port
            self.broker = EmbeddedBroker(port=free_port(), auth=self.out).start()
        self.watcher = MqttClient(self.url("ops"), on_message=lambda m: self.got.put((m.topic, m.payload)))
        self.watcher.start(timeout=30)
        self.watcher.subscribe(self.topics.fleet_registrar)
        self.watcher.subscribe(self.topics.presence_filter)
        self.spawn([sys.executable, "-m", "fogmesh", "fleet", "serve", "--dir", str(self.out), "--broker",
                    self.url("registrar"), "--trust-key", f"{self.key}.pub", "--state-dir",
                    str(self.work / "registrar"), "--root", self.root, "--log-level", "WARNING", *reload],
                   log="registrar.log")
        self.wait_for(lambda topic, payload: topic == self.topics.fleet_registrar and
                      RegistrarInfo.decode(payload).state == "online", what="the registrar online", timeout=60)
        return self

    def spawn(self, cmd: list[str], *, log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.work / log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.work, env=env or _env(), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def wait_for(self, match: Any, *, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, payload = self.got.get(timeout=left)
            except queue.Empty:
                break
            try:
                if match(topic, payload):
                    return
            except ValueError:          # a document this bench does not read (InvalidMessage is one)
                continue
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what} (logs in {self.work})")

    def close(self) -> None:
        stop_processes(self.procs)
        if self.watcher is not None:
            self.watcher.stop()
        if self.broker is not None:
            self.broker.cleanup() if self.kind == "mosquitto" else self.broker.stop()
        shutil.rmtree(self.out, ignore_errors=True)


def _online(topics: Topics, box_id: str) -> Any:
    def match(topic: str, payload: bytes) -> bool:
        agent = topics.agent_of_presence(topic)
        return agent == box_id and Presence.decode(payload, agent=agent).state == "online"
    return match


def run_fresh(source: Path, *, broker: str, pip_cache: bool) -> FreshInstall:
    """Measure the install and the fresh venv to a joined, online agent (see the module's text)."""
    work = Path(tempfile.mkdtemp(prefix="fogmesh-footprint-install-"))
    site: _Site | None = None
    try:
        site = _Site(broker, work)
        site.start()
        target = str(source)
        if source.is_dir():
            target = str(work / "source")
            shutil.copytree(source, target, ignore=COPY_IGNORE)
        venv, box = work / "venv", work / "box"
        python = str(venv / "bin" / "python")

        t0 = time.monotonic()
        _run([sys.executable, "-m", "venv", str(venv)], what="python -m venv", cwd=work)
        t1 = time.monotonic()
        _run([python, "-m", "pip", "install", "-q", "--report", str(work / "pip-report.json"),
              *(() if pip_cache else ("--no-cache-dir",)), target], what="pip install", cwd=work)
        t2 = time.monotonic()
        (site_packages,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
        size = measure_size(Path(site_packages))              # off the clock

        t3 = time.monotonic()
        made = _run([sys.executable, "-m", "fogmesh", "fleet", "enroll", "--site", "bench", "--labels", "bench",
                     "--key", str(site.key), "--broker", site.url("ops"), "--root", site.root, "--no-qr"],
                    what="fogmesh fleet enroll", cwd=work)
        token = made.stdout.split()[0]
        t4 = time.monotonic()
        state = work / "state"
        joined = _run([str(venv / "bin" / "fogmesh"), "join", token, "--dir", str(box), "--id", BOX_ID],
                      what="fogmesh join", cwd=work, env=_env(FOGMESH_STATE_DIR=str(state)), ok=(0, 1))
        t5 = time.monotonic()
        ident = codec.decode((box / "identity.json").read_bytes())
        site.spawn([str(venv / "bin" / "fogmesh"), *ident["command"], "--log-level", "WARNING"], log="agent.log",
                   env=_env(FOGMESH_PASSWORD_FILE=ident["password_file"], FOGMESH_STATE_DIR=str(state)))
        site.wait_for(_online(site.topics, ident["id"]), what=f"{ident['id']}'s presence online", timeout=120)
        t6 = time.monotonic()

        pip_version = _run([python, "-m", "pip", "--version"], what="pip --version", cwd=work).stdout.split()[1]
        summary = next((line for line in joined.stdout.splitlines() if line.startswith("summary:")), "no doctor ran")
        timing = JoinTiming(broker=broker, source=str(source), pip=pip_version, pip_cache=pip_cache,
                            venv_s=t1 - t0, install_s=t2 - t1, enroll_s=t4 - t3, join_s=t5 - t4, online_s=t6 - t5,
                            total_s=(t2 - t0) + (t6 - t3), doctor=summary.removeprefix("summary: "),
                            join_status=joined.returncode, fetched=fetched_from(work / "pip-report.json"))
        return FreshInstall(size=size, timing=timing)
    finally:
        if site is not None:
            site.close()
        shutil.rmtree(work, ignore_errors=True)
