"""``fogmesh dashboard``: the subcommand's options and its run loop."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Callable

from fogmesh.errors import FogmeshError


def add_parser(sub: Any, *, broker_arg: Callable, root_arg: Callable, log_arg: Callable) -> None:
    p = sub.add_parser(
        "dashboard", help="serve a live web view of the fleet (agents, flows, charts, dead letters, actuators)",
        description="Serve a web page showing the fleet live: every agent (state, load, queue, battery, "
                    "kinds, counts), bridges and cloud workers, the site as a picture with what flows along "
                    "each edge, charts of tasks/s, reply latency, batteries and backlog over the last "
                    "minutes, dead letters and error replies as they come, camera pipelines, and actuators. "
                    "Actuator buttons appear only with an operator login on a secured broker "
                    "(python -m fogmesh.broker.secure ... --operator NAME). The browser talks only to this process; "
                    "the broker login stays here.",
        epilog="example: fogmesh dashboard --broker 'mqtts://ops@broker:8883?ca=ca.crt' --port 8080, "
               "then open http://127.0.0.1:8080")
    broker_arg(p)
    root_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0 for the LAN, "
                        "then anyone who reaches it may press the buttons)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080; 0 picks a free one)")
    p.add_argument("--window", type=float, default=600.0, metavar="S",
                   help="seconds of history in the charts (default: 600)")
    p.add_argument("--read-only", action="store_true", help="no actuator buttons, whatever the login may do")
    log_arg(p)


def main(args: argparse.Namespace) -> int:
    from fogmesh.dashboard.server import Dashboard
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        dash = Dashboard(args.broker, root=args.root, host=args.host, port=args.port, window_s=args.window,
                         controls=False if args.read_only else None).start()
    except OSError as exc:
        if isinstance(exc, FogmeshError):
            raise
        print(f"fogmesh dashboard: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}; "
              "pick another --port (0 picks a free one)", file=sys.stderr)
        return 2
    print(f"dashboard on {dash.address}  (broker {dash.url}, actuator buttons "
          f"{'on' if dash.controls else 'off'}: {dash.controls_why})", flush=True)
    try:
        done.wait()
    finally:
        dash.stop()
    return 0
