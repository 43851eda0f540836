"""``fogmesh bridge`` and ``fogmesh cloud-worker``: their options and runs,
registered into the one ``fogmesh`` parser by :mod:`fogmesh.app.cli`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fogmesh.cli_args import (
    DEFAULT_BROKER,
    amqp_arg,
    broker_url,
    deploy_args,
    deploy_options,
    log_arg,
    root_arg,
    run_until_signal,
    setup_logging,
    wait_for_signal,
)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("bridge", help="link the site's edge broker to a cloud broker (store-and-forward)",
                       description="Take heavy tasks from the fog agents (as peer bridge-SITE), commit "
                                   "them to an on-disk outbox, forward them to the cloud broker, and "
                                   "bring results and actuation commands back. While the uplink is "
                                   "down the outbox fills (bounded) and is replayed in order.")
    p.add_argument("--site", default=default_site(),
                   help=f"site name, unique per edge broker (e.g. farm-3; default: this host's name, "
                        f"{default_site()})")
    p.add_argument("--edge", default=DEFAULT_BROKER, type=broker_url,
                   help=f"edge broker URL (default: {DEFAULT_BROKER})")
    p.add_argument("--cloud", required=True, type=broker_url,
                   help="cloud broker URL, e.g. mqtts://farm@cloud.example:8883?password_file=/run/secrets/cloud "
                        "(the edge and the cloud each take ?password_file=; $FOGMESH_PASSWORD serves both)")
    root_arg(p)
    p.add_argument("--cloud-root", default="fogmesh/v1", help="topic root on the cloud broker (default: fogmesh/v1)")
    p.add_argument("--store", help="outbox file (default: $FOGMESH_STATE_DIR/bridge-SITE.db)")
    p.add_argument("--max-backlog", type=int, default=100_000, help="tasks the outbox may hold (default: 100000)")
    p.add_argument("--max-backlog-bytes", type=int, default=256 * 1024 * 1024,
                   help="payload bytes the outbox may hold (default: 256 MiB)")
    p.add_argument("--fallback", choices=["fog", "error"], default="fog",
                   help="when the outbox is full or a deadline cannot be met: give the task back to "
                        "the fog (default) or answer it with an error")
    p.add_argument("--kinds", default="sha256,sleep,echo,stats,sum",
                   help="kinds the cloud workers run (default: sha256,sleep,echo,stats,sum)")
    p.add_argument("--resend-after", type=float, default=60.0, metavar="S",
                   help="send a task again if the cloud acknowledged it but no result came for S "
                        "seconds (default: 60; results are deduplicated)")
    p.add_argument("--aggregate", action="append", default=[], metavar="PATTERN=SECONDS",
                   help="uplink sensor readings on PATTERN as SECONDS-long mean/min/max windows; "
                        "repeatable (e.g. 'fog/v1/sensors/+/temperature=60')")
    log_arg(p)

    p = sub.add_parser("cloud-worker", help="run tasks in the cloud behind a shared subscription",
                       description="A worker on the cloud broker: takes tasks forwarded by site "
                                   "bridges from {cloud-root}/tasks (shared with every other cloud "
                                   "worker through $share), runs them with the same kinds as agents, "
                                   "replies to the bridge. Start as many as the load needs.")
    p.add_argument("--cloud", required=True, type=broker_url, help="cloud broker URL")
    p.add_argument("--id", default=None, help="worker id (default: cloud-<host>-<pid>)")
    p.add_argument("--cloud-root", default="fogmesh/v1", help="topic root on the cloud broker (default: fogmesh/v1)")
    p.add_argument("--concurrency", type=int, default=2, help="worker processes (default: 2)")
    amqp_arg(p, help="a RabbitMQ cloud: take tasks from its quorum queue over AMQP at this node "
                     "(amqp://USER:PASS@HOST:5672/); repeat for the cluster's other nodes")
    deploy_args(p)
    log_arg(p)


def default_site() -> str:
    """This host's short name, as a site name: one bridge per edge broker box."""
    import re
    import socket
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "site"


def _aggregate_rule(text: str) -> tuple[str, float]:
    pattern, sep, seconds = text.rpartition("=")
    if not sep or not pattern:
        raise ValueError(f"--aggregate expects PATTERN=SECONDS, got {text!r}")
    return pattern, float(seconds)


def run_bridge(args: argparse.Namespace) -> int:
    from fogmesh.cloud_bridge.bridge import Bridge
    from fogmesh.edge_agent.journal import default_state_dir
    from fogmesh.service_notify import ServiceNotifier
    setup_logging(args.log_level)
    try:
        rules = tuple(_aggregate_rule(a) for a in args.aggregate)
    except ValueError as exc:
        print(f"fogmesh bridge: {exc}", file=sys.stderr)
        return 2
    store = args.store or str(default_state_dir() / f"bridge-{args.site}.db")
    bridge = Bridge(site=args.site, edge=args.edge, cloud=args.cloud, root=args.root,
                    cloud_root=args.cloud_root, store_path=store, max_rows=args.max_backlog,
                    max_bytes=args.max_backlog_bytes, fallback=args.fallback,
                    kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()), aggregate=rules,
                    resend_after_s=args.resend_after, notifier=ServiceNotifier.from_env())
    bridge.start(wait_for_broker=True)
    try:
        wait_for_signal()
    finally:
        bridge.stop()
    return 0


def run_cloud_worker(args: argparse.Namespace) -> int:
    import os
    import socket

    from fogmesh.edge_agent.agent import Agent
    from fogmesh.edge_agent.options import AgentOptions
    from fogmesh.edge_agent.placement import LocalPolicy
    from fogmesh.service_notify import ServiceNotifier
    setup_logging(args.log_level)
    worker_id = args.id or f"cloud-{socket.gethostname().split('.')[0]}-{os.getpid()}"
    agent = Agent(worker_id, args.cloud, AgentOptions(root=args.cloud_root, concurrency=args.concurrency,
                                                      dispatch="auto", policy=LocalPolicy(),
                                                      notifier=ServiceNotifier.from_env(), amqp=tuple(args.amqp),
                                                      **deploy_options(args)))
    return run_until_signal(agent)
