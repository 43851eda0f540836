"""``fogmesh bench rtt``: what does fogmesh cost over raw MQTT, and over Celery+Redis?

One run, one machine: for each broker (mosquitto, embedded amqtt) it measures a
raw paho request/reply through a responder process, a fogmesh ``echo`` through
an agent process, and (once) Celery 5 + Redis ``echo.delay().get()`` with a
solo-pool worker; sequential round trips (p50/p99) and pipelined throughput
with N in flight. Prints a table, or the same figures with --json.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from typing import Any, Callable

from fogmesh.bench.rtt_report import render, summarize
from fogmesh.bench.rtt_systems import (
    DEFAULT_FLAGS,
    TUNED_FLAGS,
    PairRequester,
    Row,
    System,
    _ready,
    _start_agent,
    _stop,
    agent_system,
    bench_celery,
    mqtt5_system,
    progress,
    raw_system,
    start_amqtt,
)
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.percentiles import percentile

__all__ = ["render", "run"]


def in_turns(a: Callable[[], float], b: Callable[[], float], args: argparse.Namespace,
             label: str) -> tuple[list[float], list[float], list[float]]:
    """``a`` and ``b`` asked in turn, request by request (the order swapped
    every pair), in --rounds rounds of --requests each: each round's p50
    ratio a / b, and all of a's and of b's round trips."""
    per_round: list[float] = []
    all_a: list[float] = []
    all_b: list[float] = []
    for k in range(1, args.rounds + 1):
        lat_a: list[float] = []
        lat_b: list[float] = []
        for i in range(args.requests):
            if i % 2:
                lat_b.append(b())
                lat_a.append(a())
            else:
                lat_a.append(a())
                lat_b.append(b())
        pa, pb = percentile(lat_a, 0.5), percentile(lat_b, 0.5)
        progress(f"{label}, round {k}: p50 {pa:.3f} / {pb:.3f} ms = {pa / pb:.2f}x")
        per_round.append(pa / pb)
        all_a += lat_a
        all_b += lat_b
    return per_round, all_a, all_b


def paired_mqtt5(stack: ExitStack, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """MQTT 5 request/response against the 3.1.1 path, paired: one agent
    (default flags), two requesters that differ only in the protocol, asking
    in turn request by request (the order swapped every pair). The rows of
    the table come from different agents in different rounds, whose spread on
    a shared machine (20%+) is wider than the difference measured here."""
    root = _start_agent(stack, url, [])
    v5, v311 = PairRequester(url, root, mqtt5=True), PairRequester(url, root, mqtt5=False)
    for req in (v5, v311):
        stack.callback(req.client.stop)
        _ready(req.request)
    per_round, all5, all311 = in_turns(v5.request, v311.request, args, "mosquitto MQTT 5 vs 3.1.1 paired")
    return {"mqtt5_p50_ms": percentile(all5, 0.5), "v311_p50_ms": percentile(all311, 0.5),
            "ratio": percentile(all5, 0.5) / percentile(all311, 0.5), "per_round": per_round}


def taking_turns(raw: System, fog: System, broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """Raw paho and the default agent asked in turn, request by request (the
    order swapped every pair): each is idle while the other answers, as an
    agent is between a device's sporadic requests, and the machine's drift
    falls on both alike (see :func:`summarize`)."""
    per_round, all_fog, all_raw = in_turns(fog.one, raw.one, args, f"{broker} fogmesh and raw taking turns")
    return {"fogmesh_p50_ms": percentile(all_fog, 0.5), "raw_p50_ms": percentile(all_raw, 0.5),
            "ratio": percentile(all_fog, 0.5) / percentile(all_raw, 0.5), "per_round": per_round}


def against(stack: ExitStack, url: str, broker: str, args: argparse.Namespace) -> dict[str, Any]:
    """This fogmesh against another (``--against PYTHON``: an interpreter
    whose environment has the other version), both agents with default
    flags, asked in turn request by request: the A/B a change to the hot
    path is judged on (a back-to-back comparison of two runs divides
    figures measured minutes apart on a shared machine)."""
    this = agent_system(stack, url, "this fogmesh", [])
    other = agent_system(stack, url, "--against", [], python=args.against)
    per_round, all_this, all_other = in_turns(this.one, other.one, args, f"{broker} this vs --against")
    return {"this_p50_ms": percentile(all_this, 0.5), "against_p50_ms": percentile(all_other, 0.5),
            "ratio": percentile(all_this, 0.5) / percentile(all_other, 0.5), "per_round": per_round,
            "against": args.against}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[Row] = []
    paired: dict[str, Any] | None = None
    turns: dict[str, Any] = {}
    ab: dict[str, Any] = {}
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    for name in brokers:
        with ExitStack() as stack:
            if name == "mosquitto":
                m = Mosquitto(persistence=False).start()
                stack.callback(m.cleanup)
                host, port = m.host, m.port
            elif name == "amqtt":
                proc, port = start_amqtt()
                stack.callback(_stop, proc)
                host = "127.0.0.1"
            else:
                raise SystemExit(f"unknown broker {name!r}: use mosquitto and/or amqtt")
            url = f"mqtt://{host}:{port}"
            progress(f"{name} on {url}")
            systems = [raw_system(stack, host, port), agent_system(stack, url, DEFAULT_FLAGS, [])]
            if args.tuned:
                systems.append(agent_system(stack, url, "fogmesh echo (tuned)", TUNED_FLAGS,
                                            note=" ".join(TUNED_FLAGS)))
            if name == "mosquitto" and args.mqtt5:
                systems.append(mqtt5_system(stack, url))
            for k in range(1, args.rounds + 1):
                # Alternating, and each round in a rotated order: drift in the
                # machine (another process, a CPU's clock) falls on every system alike.
                shift = (k - 1) % len(systems)
                for system in systems[shift:] + systems[:shift]:
                    system.measure_round(name, args, k)
            if name == "mosquitto" and args.mqtt5:
                paired = paired_mqtt5(stack, url, args)
            turns[name] = taking_turns(systems[0], systems[1], name, args)
            if args.against:
                ab[name] = against(stack, url, name, args)
            rows += [Row.of(name, s.name, s.rounds, s.note) for s in systems]
    if not args.no_celery:
        progress("celery+redis")
        rows.append(bench_celery(args))
    report = summarize(rows, args, paired, turns)
    if ab:
        report["against"] = ab
        report["targets"].update({f"p50_within_5pct_of_against_on_{b}": r["ratio"] <= 1.05 for b, r in ab.items()})
    return report
