"""``fogmesh bench rtt``'s report: the ratios to raw MQTT and to Celery,
the targets met or not (:func:`summarize`), and the table (:func:`render`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from fogmesh.bench import targets_line
from fogmesh.bench.rtt_systems import DEFAULT_FLAGS, PAYLOAD, Row

TARGETS = {"mosquitto": {"p50": 1.3, "p99": 2.0, "throughput": 0.7}, "amqtt": {"p50": 1.5, "throughput": 0.6}}


def summarize(rows: list[Row], args: argparse.Namespace, paired: dict[str, Any] | None = None,
              turns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ratios and targets. The p50 target is judged on the paired rounds
    (fogmesh and raw taking turns) when there are any: a back-to-back round's
    ratio divides two blocks measured seconds apart, and on a shared machine
    raw paho's own p50 drifts more than that between blocks (0.54-1.25 ms in
    one run here); the MQTT 5 target is judged paired for the same reason.
    Both are shown."""
    by = {(r.broker, r.system): r for r in rows}
    celery = by.get(("redis", "celery+redis"))
    ratios: dict[str, dict[str, Any]] = {}
    targets: dict[str, bool] = {}
    for broker in sorted({r.broker for r in rows} - {"redis"}):
        raw, fog = by.get((broker, "raw paho MQTT")), by.get((broker, DEFAULT_FLAGS))
        if not (raw and fog and raw.p50_ms and fog.p50_ms):
            continue
        per_round = [f.p50_ms / r.p50_ms for f, r in zip(fog.rounds, raw.rounds)]
        entry: dict[str, Any] = {
            "p50_vs_raw": fog.p50_ms / raw.p50_ms, "p50_vs_raw_per_round": per_round,
            "p99_vs_raw": (fog.p99_ms or 0) / (raw.p99_ms or 1),
            "throughput_vs_raw": (fog.tasks_per_s or 0) / (raw.tasks_per_s or 1),
        }
        if celery and celery.p50_ms:
            entry["p50_vs_celery"] = fog.p50_ms / celery.p50_ms
            entry["throughput_vs_celery"] = (fog.tasks_per_s or 0) / (celery.tasks_per_s or 1)
            targets[f"faster_than_celery_redis_on_{broker}"] = entry["p50_vs_celery"] < 1.0
        ratios[broker] = entry
        pairs = (turns or {}).get(broker)
        if pairs:
            entry["paired_p50_vs_raw"] = pairs["ratio"]
            entry["paired_p50_vs_raw_per_round"] = pairs["per_round"]
        t = TARGETS.get(broker, {})
        if "p50" in t and pairs:
            targets[f"p50_at_most_{t['p50']}x_raw_in_every_paired_round_on_{broker}"] = \
                max(pairs["per_round"]) <= t["p50"]
        elif "p50" in t:
            targets[f"p50_at_most_{t['p50']}x_raw_in_every_round_on_{broker}"] = max(per_round) <= t["p50"]
        if "p99" in t:
            targets[f"p99_at_most_{t['p99']}x_raw_on_{broker}"] = entry["p99_vs_raw"] <= t["p99"]
        if "throughput" in t:
            targets[f"throughput_at_least_{t['throughput']:.0%}_of_raw_on_{broker}"] = \
                entry["throughput_vs_raw"] >= t["throughput"]
    v5, v311 = by.get(("mosquitto", "fogmesh MQTT 5 rr")), by.get(("mosquitto", DEFAULT_FLAGS))
    if v5 and v311 and v5.p50_ms and v311.p50_ms and "mosquitto" in ratios:
        ratios["mosquitto"]["mqtt5_row_p50_vs_default_row"] = v5.p50_ms / v311.p50_ms
    if paired is not None:
        targets["mqtt5_request_response_p50_within_10pct_of_311"] = paired["ratio"] <= 1.1
    return {"config": {"requests": args.requests, "pipelined": args.pipelined, "rounds": args.rounds,
                       "inflight": args.inflight, "payload_bytes": len(PAYLOAD), "qos": 1,
                       "python": sys.version.split()[0]},
            "results": [asdict(r) for r in rows], "ratios": ratios, "mqtt5_paired": paired,
            "taking_turns": turns or {}, "targets": targets}


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _spread(rounds: list[dict[str, float]], key: str, fmt: str) -> str:
    if len(rounds) < 2:
        return ""
    values = [r[key] for r in rounds]
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def render(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [f"fogmesh bench rtt: {c['rounds']} alternating rounds per system, each {c['requests']} sequential "
             f"round trips and {c['pipelined']} pipelined with {c['inflight']} in flight; "
             f"{c['payload_bytes']}-byte payloads, QoS 1, loopback; median of the rounds [min-max]",
             "",
             f"{'broker':<10} {'system':<29} {'p50 ms':>7} {'[spread]':>13} {'p99 ms':>7} {'tasks/s':>8} "
             f"{'[spread]':>11}  note",
             "-" * 100]
    for r in report["results"]:
        lines.append(f"{r['broker']:<10} {r['system']:<29} {_f(r['p50_ms'], '.3f'):>7} "
                     f"{_spread(r['rounds'], 'p50_ms', '.3f'):>13} {_f(r['p99_ms'], '.3f'):>7} "
                     f"{_f(r['tasks_per_s'], '.0f'):>8} {_spread(r['rounds'], 'tasks_per_s', '.0f'):>11}  {r['note']}")
    lines += ["", f"fogmesh (default flags) {'p50 / raw':>10} {'per round, back to back':>30} "
                  f"{'paired':>7} {'per round, paired':>30} {'p99 / raw':>10} {'tput / raw':>11} {'p50 / celery':>13}"]
    for broker, r in sorted(report["ratios"].items()):
        rounds = " ".join(f"{x:.2f}" for x in r["p50_vs_raw_per_round"])
        paired_rounds = " ".join(f"{x:.2f}" for x in r.get("paired_p50_vs_raw_per_round", []))
        paired_p50 = f"{r['paired_p50_vs_raw']:.2f}x" if "paired_p50_vs_raw" in r else "-"
        vs_celery = f"{r['p50_vs_celery']:.2f}x" if "p50_vs_celery" in r else "-"
        lines.append(f"{broker:<23} {r['p50_vs_raw']:>9.2f}x {rounds:>30} {paired_p50:>7} {paired_rounds:>30} "
                     f"{r['p99_vs_raw']:>9.2f}x {100 * r['throughput_vs_raw']:>10.0f}% {vs_celery:>13}")
    paired = report.get("mqtt5_paired")
    if paired:
        rounds = " ".join(f"{x:.2f}" for x in paired["per_round"])
        lines.append(f"mosquitto: MQTT 5 vs 3.1.1 paired (one agent, default flags; requesters alike but for the "
                     f"protocol, alternating request by request): p50 {paired['mqtt5_p50_ms']:.3f} / "
                     f"{paired['v311_p50_ms']:.3f} ms = {paired['ratio']:.2f}x (per round {rounds})")
    for broker, t in sorted(report.get("taking_turns", {}).items()):
        lines.append(f"{broker}: paired = fogmesh (default flags) and raw paho taking turns, request by request, "
                     f"the order swapped every pair: p50 {t['fogmesh_p50_ms']:.3f} / {t['raw_p50_ms']:.3f} ms; "
                     f"the p50 target is judged on these rounds")
    for broker, t in sorted(report.get("against", {}).items()):
        rounds = " ".join(f"{x:.2f}" for x in t["per_round"])
        lines.append(f"{broker}: this code vs --against {t['against']}, taking turns request by request: "
                     f"p50 {t['this_p50_ms']:.3f} / {t['against_p50_ms']:.3f} ms = {t['ratio']:.2f}x "
                     f"(per round {rounds})")
    if report["targets"]:
        lines += ["", targets_line(report["targets"])]
    return "\n".join(lines)
