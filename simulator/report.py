"""The simulation table (and --json)."""

from __future__ import annotations

from typing import Any


def render(name: str, rows: list[dict[str, Any]], seconds: float, *, nodes: int = 0) -> str:
    where = f" on {nodes} nodes" if nodes else ""
    out = [f"fogmesh simulate {name}: {rows[0]['generated'] if rows else 0:,} tasks per policy{where}",
           "",
           f"{'policy':<13} {'deadline %':>10} {'mean ms':>9} {'p99 ms':>9} {'local':>8} {'fog':>8} "
           f"{'cloud':>8} {'MB to cloud':>11} {'energy Wh':>10} {'1st flat min':>12} {'node-min':>9} "
           f"{'dropped':>7}",
           "-" * 128]
    for r in rows:
        mean = "-" if r["mean_ms"] is None else f"{r['mean_ms']:.0f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.0f}"
        flat = "never" if r["first_battery_flat_min"] is None else f"{r['first_battery_flat_min']:.1f}"
        out.append(f"{r['policy']:<13} {r['deadline_hit_pct']:>10.1f} {mean:>9} {p99:>9} {r['local']:>8} "
                   f"{r['fog']:>8} {r['cloud']:>8} {r['bytes_to_cloud'] / 1e6:>11.2f} {r['energy_wh']:>10.2f} "
                   f"{flat:>12} {r['node_minutes']:>9.0f} {r['dropped']:>7}")
    for r in rows:
        if r.get("switches"):
            story = "; ".join(f"{t / 60:.0f} min {node} {what} at {pct:.0f}%"
                              for t, node, what, pct in r["switches"][:8])
            more = f" (+{len(r['switches']) - 8} more)" if len(r["switches"]) > 8 else ""
            out.append(f"{r['policy']}: {story}{more}")
    if rows and rows[0].get("presence_every_s"):
        out.append(f"presence: each node announces every {rows[0]['presence_every_s']:g} s and receives "
                   f"{rows[0]['presence_in_per_node_s']:g} messages/s from its site")
    events = sum(r["events"] for r in rows)
    out += ["", f"simulated {events:,} events in {seconds:.2f} s ({events / max(seconds, 1e-9):,.0f} events/s)"]
    return "\n".join(out)
