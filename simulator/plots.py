"""PNG plots of a simulation: battery over time per node (one panel per
policy) and latency CDFs (one curve per policy). The only module that imports
matplotlib, and only when plots are asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fogmesh.simulator.engine import Result

MAX_NODES = 12        # battery lines per panel; a city has too many to read


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def battery_plot(results: Sequence[Result], path: Path, *, title: str) -> Path | None:
    with_battery = [r for r in results if r.battery_traces]
    if not with_battery:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(with_battery), 1, figsize=(9, 2.6 * len(with_battery)), sharex=True,
                             squeeze=False)
    for ax, r in zip(axes[:, 0], with_battery):
        for node, trace in sorted(r.battery_traces.items())[:MAX_NODES]:
            ax.plot([t / 60 for t, _ in trace], [p for _, p in trace], label=node, linewidth=1.2)
        for t, node, what, pct in r.switches[:40]:
            ax.annotate("off" if what == "offload" else "back", (t / 60, pct), fontsize=7,
                        textcoords="offset points", xytext=(0, 6), ha="center")
        ax.set_ylabel("battery %")
        ax.set_ylim(0, 100)
        ax.set_title(r.policy, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=min(4, MAX_NODES), loc="lower left")
    axes[-1, 0].set_xlabel("minutes")
    fig.suptitle(f"{title}: battery per node")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_cdf_plot(results: Sequence[Result], path: Path, *, title: str, deadline_ms: float) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        lat = sorted(r.latencies)
        if not lat:
            continue
        step = max(1, len(lat) // 1000)      # a thousand points draw any curve
        xs = lat[::step] + [lat[-1]]
        ax.plot(xs, [i * step / len(lat) for i in range(len(xs) - 1)] + [1.0], label=r.policy)
    ax.axvline(deadline_ms, color="grey", linestyle="--", linewidth=1, label="deadline")
    ax.set_xscale("log")
    ax.set_xlabel("latency ms (log)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title(f"{title}: latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
