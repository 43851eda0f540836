"""``fogmesh simulate``: its options and its run, registered into the one
``fogmesh`` parser by :mod:`fogmesh.app.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable


def add_parser(sub: Any, *, json_arg: Callable) -> None:
    p = sub.add_parser("simulate", help="simulate a fog deployment with the agents' own policies",
                       description="Discrete-event simulation of the nodes, network and workload of a "
                                   "scenario (TOML), running the same placement policies as live "
                                   "agents, one run per policy. Scenarios ship in scenarios/.")
    p.add_argument("scenario", help="a scenario file, or the name of a shipped one (conpi-case-study)")
    p.add_argument("--policy", action="append", help="policy to run; repeatable (default: the scenario's)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--scale", type=float, default=1.0,
                   help="shrink or grow node groups, devices and arrival rate together, keeping the "
                        "load per node (e.g. 0.1 runs city-1000 on 100 nodes; default: 1)")
    p.add_argument("--trace", metavar="CSV",
                   help="replay arrivals from a CSV trace (time,device,kind[,size_kb]) instead of "
                        "the scenario's Poisson workload")
    p.add_argument("--site-size", type=int, metavar="N",
                   help="nodes per edge broker (peers are the same site's), instead of the scenario's")
    p.add_argument("--fixed-presence", action="store_true",
                   help="every node announces every presence period whatever its site's size (live "
                        "agents slow down at a large site; this shows what that pace costs placement)")
    p.add_argument("--plots", metavar="DIR",
                   help="also write PNG plots (battery per node, latency CDFs) into DIR")
    json_arg(p)


def run(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace
    from importlib import resources
    from pathlib import Path

    from fogmesh.simulator import engine, report, scenario
    path = Path(args.scenario)
    if not path.exists():
        shipped = resources.files("fogmesh.scenarios").joinpath(f"{args.scenario}.toml")
        if not shipped.is_file():
            names = sorted(f.name[:-5] for f in resources.files("fogmesh.scenarios").iterdir()
                           if f.name.endswith(".toml"))
            print(f"fogmesh simulate: no scenario file {args.scenario!r}, and no shipped scenario of "
                  f"that name in fogmesh's scenarios/: {', '.join(names)})", file=sys.stderr)
            return 2
        path = Path(str(shipped))
    try:
        sc = scenario.load(path, scale=args.scale)
        if args.site_size is not None:
            sc = replace(sc, network=replace(sc.network, site_size=args.site_size))
        if args.fixed_presence:
            sc = replace(sc, presence_paced=False)
        if args.trace:
            sc = replace(sc, workload=replace(sc.workload, trace=str(Path(args.trace).resolve())))
        runs = []
        t0 = time.perf_counter()
        for policy in args.policy or sc.policies:
            runs.append(engine.simulate(sc, policy, seed=args.seed,
                                        progress=None if args.json else _progress_bar(policy)))
    except ValueError as exc:
        print(f"\nfogmesh simulate: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    if not args.json:
        print("", file=sys.stderr)
    rows = [r.summary() for r in runs]
    plots: list[str] = []
    if args.plots:
        from fogmesh.simulator import plots as sim_plots
        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        made = [sim_plots.battery_plot(runs, out / f"{sc.name}-battery.png", title=sc.name),
                sim_plots.latency_cdf_plot(runs, out / f"{sc.name}-latency-cdf.png", title=sc.name,
                                           deadline_ms=sc.workload.deadline_ms)]
        plots = [str(p) for p in made if p is not None]
    if args.json:
        print(json.dumps({"scenario": sc.name, "nodes": len(sc.nodes), "results": rows,
                          "seconds": seconds, "plots": plots}, indent=2))
    else:
        print(report.render(sc.name, rows, seconds, nodes=len(sc.nodes)))
        for p in plots:
            print(f"plot: {p}")
    return 0


def _progress_bar(policy: str) -> Any:
    """A one-line progress bar on stderr, redrawn at most every whole percent."""
    last = [-1]

    def show(fraction: float) -> None:
        pct = int(100 * fraction)
        if pct != last[0]:
            last[0] = pct
            bar = "#" * (pct // 4) + "." * (25 - pct // 4)
            print(f"\r[simulate] {policy:<13} [{bar}] {pct:3d}%", end="", file=sys.stderr, flush=True)
    return show
