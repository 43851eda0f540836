"""The simulation table (and --json)."""

from __future__ import annotations

from typing import Any


def render(name: str, rows: list[dict[str, Any]], seconds: float) -> str:
    out = [f"fogmesh simulate {name}: {rows[0]['generated'] if rows else 0} tasks per policy",
           "",
           f"{'policy':<13} {'deadline %':>10} {'mean ms':>9} {'p99 ms':>9} {'local':>6} {'fog':>6} "
           f"{'cloud':>6} {'MB to cloud':>11} {'energy Wh':>9} {'1st flat min':>12} {'dropped':>7}",
           "-" * 110]
    for r in rows:
        mean = "-" if r["mean_ms"] is None else f"{r['mean_ms']:.0f}"
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.0f}"
        flat = "never" if r["first_battery_flat_min"] is None else f"{r['first_battery_flat_min']:.1f}"
        out.append(f"{r['policy']:<13} {r['deadline_hit_pct']:>10.1f} {mean:>9} {p99:>9} {r['local']:>6} "
                   f"{r['fog']:>6} {r['cloud']:>6} {r['bytes_to_cloud'] / 1e6:>11.2f} {r['energy_wh']:>9.2f} "
                   f"{flat:>12} {r['dropped']:>7}")
    events = sum(r["events"] for r in rows)
    out += ["", f"simulated {events} events in {seconds:.2f} s ({events / max(seconds, 1e-9):,.0f} events/s)"]
    return "\n".join(out)
