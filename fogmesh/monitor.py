"""``fogmesh monitor``: a live terminal view of the fleet, drawn with rich, from
the retained presence, bridge health and pipeline announcements (so it needs no
agent's cooperation and shows a fleet it joins late). ``--once`` prints one
snapshot (``--json`` for scripts) and exits."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, Callable

from fogmesh.fleet import FleetView
from fogmesh.mqtt import BrokerUrl, MqttClient
from fogmesh.topics import Topics


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def render(rows: dict[str, list[dict[str, Any]]], *, title: str) -> Any:
    from rich.console import Group
    from rich.table import Table
    agents = Table(title=title, title_justify="left", expand=False)
    for col in ("agent", "state", "cpu %", "mem %", "queue", "running", "battery %", "tasks/s",
                "done", "offloaded", "seen s ago"):
        agents.add_column(col, justify="left" if col in ("agent", "state") else "right")
    colour = {"online": "green", "draining": "yellow", "offline": "red", "stale": "magenta"}
    for a in rows["agents"]:
        agents.add_row(a["agent"], f"[{colour.get(a['state'], 'white')}]{a['state']}[/]", _fmt(a["cpu"], ".0f"),
                       _fmt(a["mem"], ".0f"), str(a["queue"]), f"{a['running']}/{a['capacity']}",
                       _fmt(a["battery"], ".0f"), _fmt(a["tasks_per_s"], ".1f"), str(a["done"]),
                       str(a["offloaded"]), _fmt(a["age_s"], ".1f"))
    parts: list[Any] = [agents]
    if rows["bridges"]:
        bridges = Table(title="cloud bridges", title_justify="left")
        for col in ("site", "state", "link", "backlog", "oldest s", "cloud workers"):
            bridges.add_column(col)
        for b in rows["bridges"]:
            bridges.add_row(b["site"], str(b["state"]), str(b["link"]), _fmt(b["backlog"]),
                            _fmt(b["oldest_s"], ".1f"), _fmt(b["cloud_workers"]))
        parts.append(bridges)
    if rows["pipelines"]:
        pipes = Table(title="pipelines", title_justify="left")
        for col in ("pipeline", "frames", "processed", "skipped", "actuations", "last latency ms"):
            pipes.add_column(col)
        for p in rows["pipelines"]:
            pipes.add_row(p["pipeline"], *(_fmt(p[k]) for k in ("frames", "processed", "skipped", "actuations")),
                          _fmt(p["last_latency_ms"], ".0f"))
        parts.append(pipes)
    if rows.get("deployments"):
        deploys = Table(title="deployments", title_justify="left")
        for col in ("agent", "state", "desired", "applied", "bundles", "reason"):
            deploys.add_column(col)
        for d in rows["deployments"]:
            state = str(d["state"]) + (f" {100 * d['progress']:.0f}%" if d["state"] == "downloading"
                                       and d.get("progress") is not None else "")
            deploys.add_row(d["agent"], state, _fmt(d["desired_serial"]), _fmt(d["applied_serial"]),
                            d["bundles"] or "-", _fmt(d["reason"]))
        parts.append(deploys)
    return Group(*parts)


class Monitor:
    def __init__(self, broker: BrokerUrl | str, *, root: str, clock: Callable[[], float] = time.time) -> None:
        self.view = FleetView(Topics(root))
        self.clock = clock
        self._lock = threading.Lock()
        self.changed = threading.Event()
        self.client = MqttClient(broker, on_message=self._on_message)

    def _on_message(self, m: Any) -> None:
        with self._lock:
            self.view.on_message(m.topic, m.payload, retained=m.retain, now=self.clock())
        self.changed.set()

    def start(self, *, timeout: float = 10.0) -> Monitor:
        self.client.start(timeout=timeout, fail_fast=True)
        for f in self.view.filters:
            self.client.subscribe(f)
        return self

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return self.view.rows(self.clock())

    def stop(self) -> None:
        self.client.stop()


PRESENCE_PERIOD_S = 5.0      # agents' default --presence-period


def run(broker: str, *, root: str, once: bool, as_json: bool, wait: float,
        stop: Callable[[float], bool]) -> int:
    import json

    from rich.console import Console
    from rich.live import Live
    mon = Monitor(broker, root=root).start()
    console = Console() if sys.stdout.isatty() else Console(width=160)   # piped: do not wrap columns
    title = f"fogmesh fleet on {broker} (root {root})"
    try:
        if once:
            # Retained announcements arrive at once; on a broker that keeps them
            # from wildcard subscribers (RabbitMQ) live ones come within a
            # presence period: with nothing yet, wait up to one period more.
            time.sleep(wait)
            if not any(mon.rows().values()):
                mon.changed.clear()
                mon.changed.wait(max(0.0, PRESENCE_PERIOD_S + 1.0 - wait))
                time.sleep(0.2)               # the rest of that burst
            rows = mon.rows()
            if as_json:
                print(json.dumps(rows, indent=2))
            else:
                console.print(render(rows, title=title))
            if mon.view.refusals.total:            # said, not shown as rows: a forged box never gets one
                print(f"fogmesh monitor: {mon.view.refusals.summary()}", file=sys.stderr)
            return 0
        with Live(render(mon.rows(), title=title), console=console, refresh_per_second=2) as live:
            while not stop(1.0):
                refused = mon.view.refusals.total
                note = f"  ({refused} malformed or forged announcement(s) refused)" if refused else ""
                live.update(render(mon.rows(), title=title + note + "  (Ctrl-C to quit)"))
        return 0
    finally:
        mon.stop()


def add_parser(sub: Any, *, broker_arg: Callable, root_arg: Callable, json_arg: Callable) -> None:
    p = sub.add_parser("monitor", help="live view of the fleet: agents, batteries, tasks/s, bridges, pipelines",
                       description="A live terminal table of every agent (state, cpu, queue, battery, "
                                   "tasks/s, offloads), cloud bridge (link, backlog) and pipeline, from "
                                   "their retained announcements. --once prints one snapshot and exits.")
    broker_arg(p)
    root_arg(p)
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--wait", type=float, default=2.0,
                   help="with --once: seconds to collect announcements first; when none came by "
                        "then, up to one presence period more (default: 2)")
    json_arg(p)


def main(args: argparse.Namespace) -> int:
    if args.json and not args.once:
        print("fogmesh monitor: --json needs --once", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    return run(args.broker, root=args.root, once=args.once, as_json=args.json, wait=args.wait,
               stop=lambda seconds: done.wait(seconds))
