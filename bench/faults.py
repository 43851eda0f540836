"""``fogmesh bench faults``: nothing lost, nothing doubled, under each fault.

Each scenario runs the system as an operator would (brokers and agents as
processes through the CLI, ``kill -9``, a full disk, a restarted broker), a
device that submits with :class:`~fogmesh.devices.client.FogClient`, and a plain paho
subscriber counting every reply on the wire. One table: fault | broker |
submitted | answered | lost | run twice | duplicate replies | time to recover.
``tests/test_faults.py`` runs the same scenarios and asserts 0 lost, 0 run
twice and 0 duplicate replies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from fogmesh.bench.fault_disks import (
    bridge_disk_full,
    claims_on_a_cluster,
    journal_disk_full,
    lone_agent_disk_full_once,
    read_only_state_dir,
)
from fogmesh.bench.fault_restarts import (
    agent_sigkill,
    broker_restart,
    broker_restart_once,
    dead_letter_time,
    duplicate_agent_id,
    reused_task_id,
)
from fogmesh.bench.faultkit import FaultRun, progress
from fogmesh.bench.node_kill import cluster_node_kill
from fogmesh.bench.outages import power_cut

__all__ = ["SCENARIOS", "agent_sigkill", "bridge_disk_full", "broker_restart", "broker_restart_once",
           "claims_on_a_cluster", "dead_letter_time", "duplicate_agent_id", "journal_disk_full",
           "lone_agent_disk_full_once", "main", "read_only_state_dir", "reused_task_id", "run_all", "table"]


SCENARIOS: dict[str, tuple[Callable[..., FaultRun], tuple[str, ...], dict[str, Any]]] = {
    "agent-kill": (agent_sigkill, ("mosquitto", "amqtt", "aedes"), {}),
    # amqtt-volatile: the embedded broker keeping nothing across a restart (--no-persistence),
    # for comparison; run only when named in --brokers.
    "broker-term": (broker_restart, ("mosquitto", "amqtt", "amqtt-volatile"), {"kill": False}),
    "broker-kill": (broker_restart, ("mosquitto", "amqtt", "amqtt-volatile"), {"kill": True}),
    "broker-term-once": (broker_restart_once, ("mosquitto", "amqtt", "amqtt-volatile"), {"kill": False}),
    "broker-kill-once": (broker_restart_once, ("mosquitto", "amqtt", "amqtt-volatile"), {"kill": True}),
    "journal-full": (journal_disk_full, ("mosquitto", "amqtt"), {}),
    "lone-journal-full-once": (lone_agent_disk_full_once, ("mosquitto", "amqtt"), {}),
    "duplicate-id": (duplicate_agent_id, ("mosquitto", "amqtt"), {}),
    "bridge-full": (bridge_disk_full, ("mosquitto", "amqtt"), {}),
    "cluster": (claims_on_a_cluster, ("rabbitmq",), {}),
    "read-only-state": (read_only_state_dir, ("mosquitto",), {}),
    "reused-id": (reused_task_id, ("mosquitto", "amqtt"), {}),
    "dead-letter": (dead_letter_time, ("mosquitto", "amqtt"), {}),
    "power-cut": (power_cut, ("mosquitto", "amqtt"), {}),
    "cluster-node-kill": (cluster_node_kill, ("rabbitmq",), {}),
}


def run_all(names: list[str], brokers: list[str],
            overrides: dict[str, dict[str, Any]] | None = None) -> list[FaultRun]:
    rows = []
    for name in names:
        fn, supported, options = SCENARIOS[name]
        options = {**options, **(overrides or {}).get(name, {})}
        for b in supported:
            if b not in brokers:
                continue
            progress(f"{name} on {b}")
            with tempfile.TemporaryDirectory(prefix="fogmesh-faults-") as tmp:
                rows.append(fn(b, Path(tmp), **options))
            progress(f"  {table([rows[-1]]).splitlines()[-1]}")
    return rows


def table(rows: list[FaultRun]) -> str:
    wide = max([54, *(len(r.fault) for r in rows)])      # the longest fault's name sets the column
    head = f"{'fault':{wide}} {'broker':14} {'submitted':>9} {'answered':>8} {'lost':>5} {'run twice':>9} " \
           f"{'dup replies':>11} {'recover s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rec = "-" if r.recover_s is None else f"{r.recover_s:.1f}"
        lines.append(f"{r.fault:{wide}} {r.broker:14} {r.submitted:9d} {r.answered:8d} {r.lost:5d} "
                     f"{r.run_twice:9d} {r.duplicate_replies:11d} {rec:>9}")
    return "\n".join(lines)


RANDOM_BROKERS = ("mosquitto", "amqtt")


def random_rows(args: argparse.Namespace) -> list[FaultRun]:
    """``--random N`` / ``--seed S``: seeded random schedules on each broker of
    ``--brokers`` that restarts from its own state (mosquitto, the embedded
    broker), as shipped (autosave 30 s; the embedded broker's own)."""
    from fogmesh.bench.random_faults import random_schedule_run
    seeds = list(args.seed) + list(range(args.first_seed, args.first_seed + args.random))
    brokers = [b for b in (args.brokers or "mosquitto").split(",") if b]
    unknown = [b for b in brokers if b not in RANDOM_BROKERS]
    if unknown:
        raise SystemExit(f"fogmesh bench faults: random schedules run on {', '.join(RANDOM_BROKERS)}, "
                         f"not {', '.join(unknown)}")
    rows = []
    for broker in brokers:
        for seed in seeds:
            progress(f"random schedule, seed {seed}, {broker}")
            with tempfile.TemporaryDirectory(prefix="fogmesh-faults-") as tmp:
                rows.append(random_schedule_run(broker, Path(tmp), seed=seed, duration_s=args.duration))
            progress(f"  {table([rows[-1]]).splitlines()[-1]}")
            if not rows[-1].ok:
                progress(f"  seed {seed} FAILED; replay with: fogmesh bench faults --seed {seed} --duration "
                         f"{args.duration:g} --random 0 --brokers {broker}")
    return rows


def main(args: argparse.Namespace) -> int:
    if getattr(args, "random", 0) or getattr(args, "seed", []):
        rows = random_rows(args)
        print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table(rows))
        failed = [r.details["seed"] for r in rows if not r.ok]
        if failed and not args.json:
            print(f"failed seeds: {', '.join(map(str, failed))} (replay: fogmesh bench faults --seed S)")
        return 1 if failed else 0
    names = [n.strip() for n in args.faults.split(",") if n.strip()] if args.faults else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        print(f"fogmesh bench faults: unknown fault(s) {', '.join(sorted(unknown))}; "
              f"known: {', '.join(SCENARIOS)}")
        return 2
    rows = run_all(names, [b.strip() for b in args.brokers.split(",")],
                   {"power-cut": {"down_s": 60.0 * getattr(args, "down_minutes", 1.0)}})
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(table(rows))
    return 0 if all(r.ok for r in rows) else 1
