"""``fogmesh bench fleet``: what a site costs as it grows.

For each fleet size N it starts N ``fogmesh agent`` processes (``--concurrency
1``, otherwise default flags) on one mosquitto on this machine, and M
simulated devices (one connection, a device id each), then measures two
windows: idle, and under a steady load of ``--rate`` echo tasks/s from the
devices. Per window: the broker's PUBLISH messages/s in and out and its CPU,
the agents' CPU and memory (mean per agent, whole process tree), the
presence each agent publishes and receives (bytes/s: every agent receives
every other agent's presence, which is what grows with N), the period the
agents announce, and the task round trip (p50/p99) under load.

The target: what each agent receives of presence stays flat, within 2x from
the smallest N to the largest (the presence pace slows with the site:
:func:`fogmesh.edge_agent.presence.presence_pace`). Prints a table, or
``--json`` for the same figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from fogmesh import codec
from fogmesh.announcements import Presence
from fogmesh.bench import targets_line
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.edge_agent.presence import presence_pace
from fogmesh.mqtt import Delivery, Message, MqttClient
from fogmesh.percentiles import percentile
from fogmesh.topics import Topics

FLAT_WITHIN = 2.0     # presence received per agent, largest N over smallest N, at most
WAVE = 5              # agents started at once (the next wave once they are online)
REPLY_WAIT_S = 60.0   # after the load window, how long replies may still come


@dataclass
class FleetRow:
    agents: int
    devices: int
    phase: str                      # idle | load
    seconds: float
    broker_in_per_s: float          # MQTT packets/s the broker received (PUBLISH, PUBACK, PINGREQ, ...)
    broker_out_per_s: float         # ... and sent
    broker_cpu_pct: float           # % of one core
    agent_cpu_pct: float            # per agent, its process tree, % of one core
    agent_uss_mb: float             # per agent, its process tree: unique memory (shared libraries not counted)
    agent_pss_mb: float             # per agent, its process tree: proportional memory (what it shares, split)
    agent_rss_mb: float             # per agent, the agent process alone: resident memory
    presence_out_bps: float         # presence bytes/s one agent publishes (mean)
    presence_in_bps: float          # presence bytes/s one agent receives (all its peers')
    presence_msgs_in_per_s: float
    period_s: float                 # the presence period the agents announce (median)
    tasks_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    lost: int                       # tasks the broker acknowledged without a reply within REPLY_WAIT_S after it
    unsent: int = 0                 # tasks the broker never acknowledged (the device's side, not fogmesh's)
    lost_ids: list[str] = field(default_factory=list)   # the first few lost, to follow up in the agents' logs


def _say(msg: str) -> None:
    print(f"[bench fleet] {msg}", file=sys.stderr, flush=True)


class Observer:
    """One plain subscriber: presence (what every agent receives), the broker's
    $SYS counters, and the replies to the simulated devices."""

    def __init__(self, url: str, root: str) -> None:
        self.topics = Topics(root)
        self.lock = threading.Lock()
        self.presence_bytes: dict[str, int] = {}
        self.presence_msgs = 0
        self.latest: dict[str, Presence] = {}
        self.sys: dict[str, float] = {}
        self.replies: dict[str, float] = {}
        self.client = MqttClient(url, on_message=self._on_message)

    def start(self) -> None:
        self.client.start()
        self.client.subscribe(self.topics.presence_filter, 0)
        self.client.subscribe("$SYS/broker/messages/+", 0)     # every MQTT packet, in and out
        self.client.subscribe(self.topics.replies_filter, 1)

    def _on_message(self, m: Message) -> None:
        now = time.monotonic()
        if m.topic.startswith("$SYS/"):
            try:
                self.sys[m.topic.rsplit("/", 1)[1]] = float(m.payload)
            except ValueError:
                pass
            return
        agent = self.topics.agent_of_presence(m.topic)
        if agent is not None:
            if not m.payload:
                return
            try:
                p = Presence.from_dict(codec.decode(m.payload))
            except Exception:
                return
            with self.lock:
                self.latest[agent] = p
                if not m.retain:
                    self.presence_bytes[agent] = self.presence_bytes.get(agent, 0) + len(m.payload) + len(m.topic)
                    self.presence_msgs += 1
            return
        try:
            task_id = codec.decode(m.payload).get("id")
        except Exception:
            return
        with self.lock:
            self.replies.setdefault(str(task_id), now)

    def online(self) -> int:
        with self.lock:
            return sum(1 for p in self.latest.values() if p.state == "online")

    def snapshot(self) -> tuple[dict[str, int], int, dict[str, float]]:
        with self.lock:
            return dict(self.presence_bytes), self.presence_msgs, dict(self.sys)

    def stop(self) -> None:
        self.client.stop()


class Devices:
    """M simulated devices on one connection: echo tasks at a steady rate, each
    from the next device, replies to the device's reply topic."""

    def __init__(self, url: str, root: str, *, devices: int) -> None:
        self.topics = Topics(root)
        self.devices = devices
        self.client = MqttClient(url)
        self.sent: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Delivery | None = None
        self.deliveries: dict[str, Delivery | None] = {}     # the broker's PUBACK of each task

    def start(self, rate: float) -> None:
        self.client.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(rate,), name="fleet-devices", daemon=True)
        self._thread.start()

    def _run(self, rate: float) -> None:
        n, start = 0, time.monotonic()
        while not self._stop.is_set():
            due = start + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            device = f"dev-{n % self.devices}"
            task_id = f"f{n}"
            payload = codec.encode({"id": task_id, "kind": "echo", "args": {"n": n}, "device": device,
                                    "reply_to": self.topics.replies(device)})
            self.sent[task_id] = time.monotonic()
            self._last = self.deliveries[task_id] = self.client.publish(self.topics.tasks, payload, qos=1)
            n += 1

    def stop(self) -> None:
        """Stop submitting; the last tasks are in the broker before the connection goes."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._last is not None:
            self._last.wait(10.0)        # PUBACKs come in order: the last one confirms them all
        self.client.stop()


def _trees(pids: list[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
    return procs


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def _uss_pss_mb(procs: list[psutil.Process]) -> tuple[float, float]:
    """The trees' unique and proportional memory. Both: an agent's workers
    are forked from a copy of it (edge_agent/zygote.py), and the pages they
    share are in nobody's USS; PSS counts each page split among its sharers."""
    uss = pss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        uss += info.uss
        pss += info.pss
    return uss / 2**20, pss / 2**20


def _measure(*, n: int, devices: int, phase: str, seconds: float, broker: psutil.Process,
             agents: list[subprocess.Popen[bytes]], obs: Observer, load: Devices | None, rate: float) -> FleetRow:
    pids = [a.pid for a in agents]
    procs = _trees(pids)
    cpu0, bcpu0 = _cpu(procs), _cpu([broker])
    bytes0, msgs0, sys0 = obs.snapshot()
    t0 = time.monotonic()
    if load is not None:
        load.start(rate)
    time.sleep(seconds)
    if load is not None:
        load.stop()
    t1 = time.monotonic()
    procs = _trees(pids)
    cpu1, bcpu1 = _cpu(procs), _cpu([broker])
    bytes1, msgs1, sys1 = obs.snapshot()
    elapsed = t1 - t0
    p50 = p99 = None
    lost, done, unsent, lost_ids = 0, 0, 0, []
    if load is not None:
        deadline = time.monotonic() + REPLY_WAIT_S      # replies still on their way
        while time.monotonic() < deadline:
            with obs.lock:
                if all(task_id in obs.replies for task_id in load.sent):
                    break
            time.sleep(0.2)
        rtts = []
        with obs.lock:
            for task_id, sent in load.sent.items():
                got = obs.replies.get(task_id)
                delivery = load.deliveries.get(task_id)
                if got is None and (delivery is None or not delivery.confirmed()):
                    unsent += 1
                elif got is None:
                    lost += 1
                    lost_ids += [task_id] if len(lost_ids) < 20 else []
                else:
                    rtts.append(1000 * (got - sent))
        done = len(rtts)
        if rtts:
            p50, p99 = percentile(rtts, 0.5), percentile(rtts, 0.99)
    out = [bytes1.get(a, 0) - bytes0.get(a, 0) for a in bytes1]
    site_in = sum(out)
    periods = [p.period for p in obs.latest.values() if p.period]

    def sys_rate(key: str) -> float:
        return max(0.0, sys1.get(key, 0.0) - sys0.get(key, 0.0)) / elapsed

    uss, pss = _uss_pss_mb(procs)
    return FleetRow(
        agents=n, devices=devices, phase=phase, seconds=round(elapsed, 1),
        broker_in_per_s=sys_rate("received"), broker_out_per_s=sys_rate("sent"),
        broker_cpu_pct=100 * (bcpu1 - bcpu0) / elapsed, agent_cpu_pct=100 * (cpu1 - cpu0) / elapsed / n,
        agent_uss_mb=uss / n, agent_pss_mb=pss / n, agent_rss_mb=_rss_mb(pids) / n,
        presence_out_bps=site_in / elapsed / n, presence_in_bps=site_in / elapsed,
        presence_msgs_in_per_s=(msgs1 - msgs0) / elapsed,
        period_s=statistics.median(periods) if periods else 0.0,
        tasks_per_s=done / elapsed, p50_ms=p50, p99_ms=p99, lost=lost, unsent=unsent, lost_ids=lost_ids)


def run_size(url: str, broker: psutil.Process, *, n: int, devices: int, rate: float, seconds: float,
             settle_s: float, state_dir: str) -> list[FleetRow]:
    root = f"fleet/{uuid.uuid4().hex[:6]}"
    obs = Observer(url, root)
    obs.start()
    agents: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "FOGMESH_STATE_DIR": state_dir}
    try:
        started = time.monotonic()
        for first in range(0, n, WAVE):
            for i in range(first, min(n, first + WAVE)):
                agents.append(subprocess.Popen(
                    [sys.executable, "-m", "fogmesh", "agent", "--id", f"fleet-{i:03d}", "--broker", url,
                     "--root", root, "--concurrency", "1", "--log-level", "WARNING"],
                    env=env, stdout=subprocess.DEVNULL))
            deadline = time.monotonic() + 120
            while obs.online() < len(agents):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {obs.online()} of {len(agents)} agents came online")
                if any(a.poll() is not None for a in agents):
                    raise RuntimeError("an agent exited during start-up")
                time.sleep(0.2)
        _say(f"{n} agents online after {time.monotonic() - started:.0f} s; settling {settle_s:g} s")
        time.sleep(settle_s)
        # Idle: at least two presence periods, so every agent's heartbeat is counted twice.
        idle_s = max(seconds, 2 * presence_pace(base_period=AgentOptions.presence_period, site=n).period)
        rows = [_measure(n=n, devices=devices, phase="idle", seconds=idle_s, broker=broker, agents=agents,
                         obs=obs, load=None, rate=rate)]
        _say(f"{n} agents idle: {rows[-1].presence_in_bps:.0f} B/s of presence in per agent")
        load = Devices(url, root, devices=devices)
        rows.append(_measure(n=n, devices=devices, phase="load", seconds=seconds, broker=broker, agents=agents,
                             obs=obs, load=load, rate=rate))
        _say(f"{n} agents under {rate:g} tasks/s: p50 {rows[-1].p50_ms or 0:.1f} ms, {rows[-1].lost} lost")
        return rows
    finally:
        stop_processes(agents, 20.0)
        obs.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in str(args.agents).split(",") if x.strip()]
    rows: list[FleetRow] = []
    state_dir = tempfile.mkdtemp(prefix="fogmesh-fleet-")
    with Mosquitto(persistence=False, extra_conf="sys_interval 1\nmax_connections -1") as m:
        assert m.proc is not None
        broker = psutil.Process(m.proc.pid)
        for n in sizes:
            _say(f"N = {n}: starting {n} agents (--concurrency 1) and {args.devices} devices")
            rows += run_size(m.url, broker, n=n, devices=args.devices, rate=args.rate, seconds=args.seconds,
                             settle_s=args.settle_s, state_dir=state_dir)
    idle = [r for r in rows if r.phase == "idle"]
    ratio = None
    if len(idle) >= 2 and idle[0].presence_in_bps > 0:
        ratio = idle[-1].presence_in_bps / idle[0].presence_in_bps
    return {"rows": [asdict(r) for r in rows],
            "presence_in_ratio_largest_to_smallest": ratio,
            # judged across fleet sizes: with one size there is nothing to judge
            "targets": {} if ratio is None else {f"presence_per_agent_flat_within_{FLAT_WITHIN:g}x":
                                                 ratio <= FLAT_WITHIN}}


def render(report: dict[str, Any]) -> str:
    head = (f"{'agents':>6} {'phase':<5} {'broker in/s':>11} {'out/s':>7} {'broker CPU':>10} "
            f"{'agent CPU':>9} {'USS MB':>6} {'PSS MB':>6} {'RSS MB':>6} {'pres out B/s':>12} {'pres in B/s':>11} "
            f"{'period s':>8} "
            f"{'tasks/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'lost':>5} {'unsent':>6}")
    lines = ["fogmesh bench fleet: N `fogmesh agent --concurrency 1` on one mosquitto, devices on one "
             "connection; broker: MQTT packets/s; per agent: its process tree (CPU: % of one core; "
             "USS, PSS: unique and proportional memory of the tree; RSS: the agent process)",
             "", head, "-" * len(head)]
    for r in report["rows"]:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"
        lines.append(f"{r['agents']:>6} {r['phase']:<5} {r['broker_in_per_s']:>11.0f} {r['broker_out_per_s']:>7.0f} "
                     f"{r['broker_cpu_pct']:>9.1f}% {r['agent_cpu_pct']:>8.2f}% {r['agent_uss_mb']:>6.1f} "
                     f"{r.get('agent_pss_mb', 0.0):>6.1f} {r['agent_rss_mb']:>6.1f} "
                     f"{r['presence_out_bps']:>12.1f} {r['presence_in_bps']:>11.0f} {r['period_s']:>8.1f} "
                     f"{r['tasks_per_s']:>7.0f} {ms(r['p50_ms']):>7} {ms(r['p99_ms']):>7} {r['lost']:>5} "
                     f"{r.get('unsent', 0):>6}")
    ratio = report["presence_in_ratio_largest_to_smallest"]
    lines += ["", f"presence received per agent, largest fleet over smallest (idle): "
                  f"{'-' if ratio is None else f'{ratio:.2f}x'}",
              targets_line(report["targets"]) if report["targets"] else "targets: need two fleet sizes"]
    return "\n".join(lines)
