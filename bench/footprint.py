"""``fogmesh bench footprint``: what an agent costs a small box, started as
README says (``fogmesh agent --id X --broker URL``, default flags).

Measures, for the agent process and its children (the zygote its workers
are forked from and the workers; where the agent could not use one,
multiprocessing's fork server and resource tracker): unique (USS),
proportional (PSS) and resident (RSS) memory once idle, CPU used while idle,
and the start-up time from spawning the command to the first answered task.
Prints a table (``--json`` for the same figures) and whether the target of an
idle agent under 35 MB in total is met.

Why PSS too: processes forked from one another share pages until one writes
to them, and a page shared by two processes is in neither one's USS. The sum
of USS then undercounts what the tree holds; the sum of PSS (each shared page
split among the processes that map it) does not, so the target is judged on
both.

Then (unless ``--no-install``) what a new box costs to set up
(:mod:`.fresh_join`): the size of a fresh venv with this checkout installed
in it, the largest distributions in it, and the time from ``python -m venv``
to a joined, online agent (``fogmesh fleet enroll``, ``fogmesh join``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fogmesh.bench import targets_line
from fogmesh.broker.processes import stop_processes

TARGET_USS_MB = 35.0
#: what only the camera and vision kinds use (devices/vision.py)
VISION = ("opencv-python-headless", "numpy")
LARGEST = 5
ECHO_TASKS, HASH_TASKS = 1000, 100


@dataclass
class ProcessRow:
    role: str
    pid: int
    uss_mb: float
    pss_mb: float
    rss_mb: float


@dataclass
class Footprint:
    broker: str
    start_to_first_answer_s: float
    idle_cpu_pct: float
    idle_s: float
    processes: list[ProcessRow] = field(default_factory=list)
    #: The same processes idle again after ``tasks_run`` tasks (echo inline,
    #: sha256 on the workers): pages written since the fork are no longer
    #: shared, and the agent keeps recent answers to refuse repeated ids.
    after_tasks: list[ProcessRow] = field(default_factory=list)
    tasks_run: int = 0

    def totals(self) -> dict[str, float]:
        """Sums over the processes (USS, PSS, RSS), idle after start and
        (``after_tasks_...``) idle again after the tasks."""
        return {f"{prefix}{key}": sum(getattr(p, key) for p in rows)
                for prefix, rows in (("", self.processes), ("after_tasks_", self.after_tasks))
                for key in ("uss_mb", "pss_mb", "rss_mb")}


def _role(proc: psutil.Process, agent_pid: int) -> str:
    if proc.pid == agent_pid:
        return "agent"
    cmd = " ".join(proc.cmdline())
    if cmd == " ".join(psutil.Process(agent_pid).cmdline()):     # forked, not spawned
        return "zygote" if proc.ppid() == agent_pid else "worker"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "forkserver" in cmd:            # the server is the agent's child; workers are its children
        return "fork server" if proc.ppid() == agent_pid else "worker"
    if "multiprocessing" in cmd or "spawn" in cmd:
        return "worker"
    return "child"


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


def _rows(procs: list[psutil.Process], agent_pid: int) -> list[ProcessRow]:
    rows = []
    for p in procs:
        mem = p.memory_full_info()
        rows.append(ProcessRow(_role(p, agent_pid), p.pid, mem.uss / 2**20, mem.pss / 2**20, mem.rss / 2**20))
    return rows


def measure(url: str, broker: str, *, idle_s: float, extra_args: list[str] | None = None) -> Footprint:
    from fogmesh.devices.client import FogClient
    root = f"bench/{uuid.uuid4().hex[:8]}"
    state = tempfile.mkdtemp(prefix="fogmesh-footprint-")
    started = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "footprint", "--broker", url,
                              "--root", root, "--log-level", "WARNING", *(extra_args or [])],
                             env={**os.environ, "FOGMESH_STATE_DIR": state})
    try:
        with FogClient(url, root=root) as client:
            deadline = started + 60
            while True:
                try:
                    client.submit("echo", {}, timeout=0.5)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
            first_answer = time.monotonic() - started
            time.sleep(1.0)                       # let start-up settle before the idle window
            procs = _tree(agent.pid)
            cpu_before = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            time.sleep(idle_s)
            procs = [p for p in _tree(agent.pid) if p.is_running()]
            cpu_after = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            rows = _rows(procs, agent.pid)
            echoes, hashes = ECHO_TASKS, HASH_TASKS
            for i in range(echoes):
                client.submit("echo", {"i": i}, timeout=10)
            for _ in range(hashes):
                client.submit("sha256", {"size": 4096}, timeout=10)
            time.sleep(2.0)
            after = _rows([p for p in _tree(agent.pid) if p.is_running()], agent.pid)
            return Footprint(broker=broker, start_to_first_answer_s=first_answer,
                             idle_cpu_pct=100 * max(0.0, cpu_after - cpu_before) / idle_s, idle_s=idle_s,
                             processes=rows, after_tasks=after, tasks_run=echoes + hashes)
    finally:
        stop_processes([agent])
        shutil.rmtree(state, ignore_errors=True)


def _install(args: argparse.Namespace) -> dict[str, Any]:
    from fogmesh.bench.fresh_join import find_source, run_fresh
    source = Path(args.source) if args.source else find_source()
    if source is None:
        raise SystemExit("fogmesh bench footprint: this fogmesh is not a checkout: name one (or a wheel) with "
                         "--source, or skip the install with --no-install")
    print(f"[bench footprint] fresh venv: pip install {source}, then fogmesh join on {args.site_broker} "
          "(minutes)", file=sys.stderr, flush=True)
    fresh = run_fresh(source, broker=args.site_broker, pip_cache=args.pip_cache)
    size = asdict(fresh.size)
    size["vision_mb"] = fresh.size.of(*VISION)
    return {"size": size, "timing": asdict(fresh.timing)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fogmesh.broker.embedded import EmbeddedBroker
    from fogmesh.broker.ports import free_port
    print("[bench footprint] embedded broker; agent with default flags", file=sys.stderr, flush=True)
    with EmbeddedBroker(port=free_port()) as broker:
        fp = measure(broker.url, "embedded", idle_s=args.idle_s)
    limit = f"{TARGET_USS_MB:g}"
    totals = fp.totals()
    install = {"install": _install(args)} if args.install else {}
    return {"footprint": {**asdict(fp), **totals}, **install,
            "targets": {f"idle_agent_uss_at_most_{limit}_mb": totals["uss_mb"] <= TARGET_USS_MB,
                        f"idle_agent_pss_at_most_{limit}_mb": totals["pss_mb"] <= TARGET_USS_MB,
                        f"idle_after_{fp.tasks_run}_tasks_uss_at_most_{limit}_mb":
                            totals["after_tasks_uss_mb"] <= TARGET_USS_MB,
                        f"idle_after_{fp.tasks_run}_tasks_pss_at_most_{limit}_mb":
                            totals["after_tasks_pss_mb"] <= TARGET_USS_MB}}


def render(report: dict[str, Any]) -> str:
    fp = report["footprint"]
    lines = [f"fogmesh bench footprint: `fogmesh agent` with default flags on the {fp['broker']} broker, "
             f"idle for {fp['idle_s']:g} s", "",
             f"{'process':<18} {'pid':>7} {'USS MB':>8} {'PSS MB':>8} {'RSS MB':>8}", "-" * 53]
    for p in fp["processes"]:
        lines.append(f"{p['role']:<18} {p['pid']:>7} {p['uss_mb']:>8.1f} {p['pss_mb']:>8.1f} {p['rss_mb']:>8.1f}")
    lines += ["-" * 53, f"{'total':<18} {'':>7} {fp['uss_mb']:>8.1f} {fp['pss_mb']:>8.1f} {fp['rss_mb']:>8.1f}",
              f"{'after ' + str(fp['tasks_run']) + ' tasks':<18} {'':>7} {fp['after_tasks_uss_mb']:>8.1f} "
              f"{fp['after_tasks_pss_mb']:>8.1f} {fp['after_tasks_rss_mb']:>8.1f}", "",
              f"idle CPU: {fp['idle_cpu_pct']:.2f}% of one core; start-up to the first answered task: "
              f"{fp['start_to_first_answer_s']:.2f} s", "",
              targets_line(report["targets"])]
    if "install" in report:
        lines += ["", *render_install(report["install"])]
    return "\n".join(lines)


def render_install(install: dict[str, Any]) -> list[str]:
    size, t = install["size"], install["timing"]
    cache = "pip's cache and configuration" if t["pip_cache"] else "no pip cache"
    places = {"https": "downloaded", "file": "from this machine's disk"}
    fetched = ", ".join(f"{n} {places.get(k, k)}" for k, n in sorted(t["fetched"].items()))
    lines = [f"installed: a fresh venv, pip install {t['source']} (not editable; {cache}): "
             f"site-packages {size['total_mb']:.1f} MB, {len(size['distributions'])} distributions", "",
             f"{'distribution':<28} {'version':<14} {'MB':>8}", "-" * 52]
    for d in size["distributions"][:LARGEST]:
        lines.append(f"{d['name']:<28} {d['version']:<14} {d['mb']:>8.1f}")
    lines += ["-" * 52, f"{', '.join(VISION)}: {size['vision_mb']:.1f} MB of it "
              "(only the camera and the vision kinds use them)", "",
              f"fresh venv to a joined, online agent ({t['broker']} broker"
              f"{', TLS' if t['broker'] == 'mosquitto' else ''}, registrar running):", "",
              f"{'step':<52} {'s':>8}", "-" * 61]
    steps = [("python -m venv", t["venv_s"]), (f"pip install (pip {t['pip']})", t["install_s"]),
             ("fogmesh fleet enroll (the operator)", t["enroll_s"]),
             (f"fogmesh join TOKEN (doctor: {t['doctor']})", t["join_s"]),
             ("the agent started to its presence online", t["online_s"])]
    lines += [f"{name:<52} {s:>8.1f}" for name, s in steps]
    lines += ["-" * 61, f"{'total':<52} {t['total_s']:>8.1f}", f"pip installed {fetched}"]
    if t["join_status"]:
        lines.append(f"fogmesh join exited {t['join_status']}: its doctor found a problem")
    return lines
