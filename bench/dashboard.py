"""``fogmesh bench dashboard``: is the page still responsive with a big site,
and does it hold bounded memory when left open?

On one mosquitto started here: a site of ``--agents`` agents announcing
presence every 5 s (batteries draining), devices submitting ``--rate`` tasks/s
answered one 50 ms step later (local, fog and cloud tiers, 1% errors), a dead letter
every 10 s and a bridge's health. The traffic is generated: what is measured
is the dashboard (the real ``fogmesh dashboard`` process) and the page in
headless Chromium, not the agents. Every ``--sample-s`` the bench collects
garbage in the page and reads its JavaScript heap, its DOM nodes and event
listeners, how long each update took to render, the round trip of a call
into the page (what a click waits for), how many updates the page is behind,
and the dashboard process's CPU and memory.

Targets: every render, and the longest the page is busy at a stretch, under
100 ms, never more than 2 updates behind, and once the chart window has filled, JavaScript heap, DOM
nodes and the dashboard's memory flat (their floor over the last third of the
run within 20% + 2 MB, and 50 nodes, of the first sample after the window filled).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from fogmesh import codec
from fogmesh.announcements import Battery, Presence
from fogmesh.bench import targets_line
from fogmesh.bench.browser import chromium
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics

RENDER_MS_TARGET = 100.0
LONGEST_TASK_MS_TARGET = 100.0
BEHIND_TARGET = 2


@dataclass
class Sample:
    at_s: float
    heap_mb: float
    dom_nodes: int
    listeners: int
    render_p50_ms: float
    render_max_ms: float
    round_trip_ms: float
    longest_task_ms: float
    behind: int
    dashboard_cpu_pct: float
    dashboard_rss_mb: float


class SyntheticSite:
    """Presence of N agents, tasks at a rate with their replies, a dead letter
    now and then, one bridge's health: what a big site puts on the broker."""

    def __init__(self, url: str, topics: Topics, *, agents: int, rate: float) -> None:
        self.topics = topics
        self.agents = [f"agent-{i:03d}" for i in range(agents)]
        self.rate = rate
        self.client = MqttClient(url, client_id=f"bench-site-{uuid.uuid4().hex[:6]}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="synthetic-site", daemon=True)
        self.sent = 0

    def start(self) -> SyntheticSite:
        self.client.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for a in self.agents:                       # leave no retained presence behind
            self.client.publish(self.topics.presence(a), b"", retain=True)
        self.client.publish(self.topics.bridge_health("bench"), b"", retain=True)
        time.sleep(0.5)
        self.client.stop()

    def _presence(self, i: int, agent: str, now: float, started: float) -> None:
        battery = max(5.0, 100.0 - (i % 7) * 9 - (now - started) / 30)
        p = Presence(agent=agent, state="online", ts=now, cpu=20 + i % 50, mem=40, load=0.5, queue=i % 3,
                     running=1, capacity=2, kinds=("echo", "sum", "stats"), dispatch="shared",
                     done=int((now - started) * self.rate / len(self.agents)), offloaded=i, period=5.0,
                     battery=Battery(battery, False) if i % 5 else None)
        self.client.publish(self.topics.presence(agent), p.encode(), retain=True)

    def _run(self) -> None:
        t = self.topics
        started = time.time()
        step = 0.05
        per_step = self.rate * step
        owed = 0.0
        answers: list[bytes] = []          # this step's tasks, answered at the next step
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.time()
            n = len(self.agents)
            slots = int(5 / step)                       # each agent every 5 s, spread over the 5 s
            slot = int(now / step) % slots
            for i, agent in enumerate(self.agents):
                if i % slots == slot:
                    self._presence(i, agent, now, started)
            due, answers = answers, []
            owed += per_step
            while owed >= 1:
                owed -= 1
                self.sent += 1
                tid = f"b{self.sent}"
                self.client.publish(t.device_tasks(f"dev-{self.sent % 20}"), codec.encode(
                    {"id": tid, "kind": "sum", "args": {"values": [1, 2]}, "reply_to": t.replies("bench")}), qos=0)
                tier = ("local", "local", "fog", "cloud")[self.sent % 4]
                body: dict[str, Any] = {"id": tid, "status": "ok", "result": 3, "worker": self.agents[self.sent % n],
                                        "tier": tier, "ms": {"queue": 0.1, "run": 0.1, "total": 0.4}}
                if self.sent % 100 == 0:
                    body = {**body, "status": "error", "error": {"code": "busy", "message": "queue full"}}
                    del body["result"]
                answers.append(codec.encode(body))
            for payload in due:
                self.client.publish(t.replies("bench"), payload, qos=0)
            if int(now * 20) % 200 == 0:                # a dead letter every 10 s
                self.client.publish(t.errors, codec.encode(
                    {"agent": self.agents[0], "ts": now, "error": {"code": "bad_json", "message": "not JSON"},
                     "topic": t.tasks, "id": None, "excerpt": "{"}), qos=0)
            if int(now * 20) % 40 == 0:                 # bridge health every 2 s
                self.client.publish(t.bridge_health("bench"), codec.encode(
                    {"site": "bench", "state": "online", "link": "up", "backlog": self.sent % 50,
                     "oldest_age_s": 0.5, "cloud_workers": 3, "ts": now}), retain=True)
            next_at += step
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    topics = Topics(f"bench/{uuid.uuid4().hex[:8]}")
    samples: list[Sample] = []
    first_render_ms = load_busy_ms = 0.0
    log = Path(tempfile.mkdtemp(prefix="fogmesh-bench-dashboard-")) / "dashboard.log"
    with Mosquitto() as broker:
        site = SyntheticSite(broker.url, topics, agents=args.agents, rate=args.rate).start()
        dash = subprocess.Popen([sys.executable, "-m", "fogmesh", "dashboard", "--broker", broker.url,
                                 "--root", topics.root, "--port", "0", "--window", str(args.window),
                                 "--log-level", "WARNING"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            address = _address(log)
            proc = psutil.Process(dash.pid)
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                cdp = page.context.new_cdp_session(page)
                cdp.send("HeapProfiler.enable")
                page.goto(address)
                page.wait_for_function("() => fogmeshDashboard.stats().ticks > 2", timeout=15_000)
                # Opening the page (the first update builds every row) is reported apart from
                # what an open page does every second.
                first_render_ms = page.evaluate("() => fogmeshDashboard.stats().renderMs[0]")
                load_busy_ms = page.evaluate("() => fogmeshDashboard.takeLongestTaskMs()")
                page.evaluate("() => fogmeshDashboard.forgetRenderTimes()")
                opened = time.monotonic()
                cpu_at, cpu = opened, sum(proc.cpu_times()[:2])
                while (elapsed := time.monotonic() - opened) < args.minutes * 60:
                    time.sleep(min(args.sample_s, args.minutes * 60 - elapsed))
                    t0 = time.perf_counter()           # before collecting garbage, which stalls the page
                    stats = page.evaluate("() => fogmeshDashboard.stats()")
                    round_trip = (time.perf_counter() - t0) * 1000
                    longest = page.evaluate("() => fogmeshDashboard.takeLongestTaskMs()")
                    cdp.send("HeapProfiler.collectGarbage")
                    heap = cdp.send("Runtime.getHeapUsage")["usedSize"] / 2**20
                    dom = cdp.send("Memory.getDOMCounters")
                    renders = sorted(stats["renderMs"]) or [0.0]
                    now = time.monotonic()
                    cpu_now = sum(proc.cpu_times()[:2])
                    expected = int((now - opened) / 1.0)
                    samples.append(Sample(
                        at_s=round(now - opened, 1), heap_mb=round(heap, 2), dom_nodes=dom["nodes"],
                        listeners=dom["jsEventListeners"], render_p50_ms=round(renders[len(renders) // 2], 1),
                        render_max_ms=round(renders[-1], 1), round_trip_ms=round(round_trip, 1),
                        longest_task_ms=round(longest, 1),
                        behind=max(0, expected - stats["ticks"] + 1),
                        dashboard_cpu_pct=round(100 * (cpu_now - cpu) / (now - cpu_at), 1),
                        dashboard_rss_mb=round(proc.memory_info().rss / 2**20, 1)))
                    cpu_at, cpu = now, cpu_now
                    s = samples[-1]
                    print(f"[bench dashboard] {s.at_s:6.0f} s: heap {s.heap_mb:.1f} MB, {s.dom_nodes} nodes, "
                          f"render max {s.render_max_ms:.0f} ms, {s.behind} behind", file=sys.stderr, flush=True)
        finally:
            stop_processes([dash])
            site.stop()
    return {"agents": args.agents, "rate": args.rate, "window_s": args.window, "minutes": args.minutes,
            "first_render_ms": round(first_render_ms, 1), "load_busy_ms": round(load_busy_ms, 1),
            "tasks_sent": site.sent, "samples": [asdict(s) for s in samples], "targets": targets(samples, args.window)}


def _address(log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"dashboard on (http://\S+)", log.read_text())
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"the dashboard did not start: {log.read_text()[-500:]}")


def targets(samples: list[Sample], window_s: float) -> dict[str, bool]:
    """Memory is judged by its floor: garbage not yet collected makes a sample
    spike and the next one fall back; a leak raises the floor. So the lowest
    of the last third of the samples is compared with the first sample taken
    once the chart window had filled."""
    filled = [s for s in samples if s.at_s >= window_s + 5] or samples[-1:]
    first = filled[0]
    tail = filled[-max(1, len(filled) // 3):]
    return {
        f"every_render_under_{RENDER_MS_TARGET:g}_ms": all(s.render_max_ms < RENDER_MS_TARGET for s in samples),
        f"page_never_busy_over_{LONGEST_TASK_MS_TARGET:g}_ms": all(s.longest_task_ms < LONGEST_TASK_MS_TARGET
                                                                   for s in samples),
        f"never_more_than_{BEHIND_TARGET}_updates_behind": all(s.behind <= BEHIND_TARGET for s in samples),
        "browser_heap_flat_once_the_window_filled": min(s.heap_mb for s in tail) <= first.heap_mb * 1.2 + 2,
        "dom_nodes_flat_once_the_window_filled": min(s.dom_nodes for s in tail) <= first.dom_nodes + 50,
        "dashboard_memory_flat_once_the_window_filled": min(s.dashboard_rss_mb for s in tail)
        <= first.dashboard_rss_mb * 1.2 + 2,
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"fogmesh bench dashboard: {report['agents']} agents, {report['rate']:g} tasks/s "
             f"({report['tasks_sent']} sent), chart window {report['window_s']:g} s, page open "
             f"{report['minutes']:g} min in headless Chromium", "",
             f"{'at s':>6} {'JS heap MB':>10} {'DOM nodes':>9} {'listeners':>9} {'render p50':>10} "
             f"{'render max':>10} {'round trip':>10} {'busy max':>8} {'behind':>6} "
             f"{'dash CPU %':>10} {'dash RSS MB':>11}",
             "-" * 109]
    for s in report["samples"]:
        lines.append(f"{s['at_s']:>6.0f} {s['heap_mb']:>10.2f} {s['dom_nodes']:>9} {s['listeners']:>9} "
                     f"{s['render_p50_ms']:>10.1f} {s['render_max_ms']:>10.1f} {s['round_trip_ms']:>10.1f} "
                     f"{s['longest_task_ms']:>8.1f} {s['behind']:>6} {s['dashboard_cpu_pct']:>10.1f} "
                     f"{s['dashboard_rss_mb']:>11.1f}")
    lines += ["", f"opening the page: first update drawn in {report['first_render_ms']:.0f} ms, main thread "
              f"busy at most {report['load_busy_ms']:.0f} ms; the samples are of the open page",
              "render: one update drawn; round trip: a call into the page from the bench (Playwright "
              "included); busy max: the longest the page's main thread was busy since the last sample "
              "(what a click can wait); all in ms", targets_line(report["targets"])]
    return "\n".join(lines)
