"""``fogmesh``: the one command-line entry point.

Subcommands import their parts lazily, so ``fogmesh submit`` on a sensor
gateway does not load the broker or the worker pool.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from fogmesh import __version__
from fogmesh.cli_args import (
    DEFAULT_BROKER,
    broker_arg,
    broker_url,
    brokers_arg,
    json_arg,
    log_arg,
    root_arg,
    setup_logging,
    wait_for_signal,
)
from fogmesh.errors import FogmeshError

__all__ = ["DEFAULT_BROKER", "broker_url", "build_parser", "main", "COMMANDS"]

EPILOG = """\
Quick start (no external broker needed):
  fogmesh up                                   # broker + 3 agents + a demo workload

By hand, in three terminals:
  fogmesh broker --port 1883                   # embedded broker
  fogmesh agent --id pi-1 --broker mqtt://127.0.0.1:1883
  fogmesh submit sum --args '{"values": [1, 2, 3]}'

Watch everything:  mosquitto_sub -t 'fog/#' -v     Topic tree: topics.md
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fogmesh", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="MQTT task fabric for edge/fog/cloud IoT: devices publish tasks, fog agents "
                    "run or place them, results come back on the task's reply topic.")
    parser.add_argument("--version", action="version", version=f"fogmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("broker", help="run the embedded MQTT broker (amqtt; nothing to install)",
                       description="Run the embedded amqtt broker in the foreground until Ctrl-C. "
                                   "For production use mosquitto (see broker/mosquitto.conf).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; "
                   "0.0.0.0 for the whole LAN)")
    p.add_argument("--port", type=int, default=1883, help="TCP port (default: 1883)")
    p.add_argument("--ws-port", type=int, metavar="PORT",
                   help="also serve MQTT over WebSockets on this port, for browsers and dashboards "
                        "(ws://HOST:PORT/mqtt; default: off)")
    p.add_argument("--persistence", metavar="DIR",
                   help="keep sessions, subscriptions, retained and queued messages across restarts in "
                        "DIR/embedded-broker-PORT.state (default: $FOGMESH_STATE_DIR or "
                        "~/.local/state/fogmesh)")
    p.add_argument("--no-persistence", action="store_true",
                   help="keep nothing across a restart (every client starts with no session)")
    p.add_argument("--autosave", type=float, default=5.0, metavar="S",
                   help="also write the state every S seconds while it changes, as mosquitto's "
                        "autosave_interval (a SIGKILL loses what changed since; default: 5)")
    p.add_argument("--auth", metavar="DIR",
                   help="logins and ACL: DIR/passwd and DIR/acl in mosquitto's formats (python -m "
                        "fogmesh.broker.secure --out DIR writes them; fogmesh fleet serve --dir DIR adds and "
                        "revokes logins), read again whenever they change; a client whose login goes is "
                        "disconnected. Default: every client is let in")
    log_arg(p)

    from fogmesh.edge_agent.cli import add_parser as add_agent_parser
    add_agent_parser(sub)
    from fogmesh.deploy.cli import add_parsers as add_deploy_parsers
    add_deploy_parsers(sub)

    p = sub.add_parser("submit", help="submit a task and print its reply",
                       description="Publish one task and print the JSON reply. Exit status: 0 ok, "
                                   "1 the task failed, 2 no reply / cannot connect.")
    p.add_argument("kind", help="task kind, e.g. echo, sum, stats, sleep, sha256")
    p.add_argument("--args", default="{}", help='task args as a JSON object (default: {})')
    broker_arg(p)
    root_arg(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (default: 10)")
    p.add_argument("--id", help="task id / idempotency key (default: random)")
    p.add_argument("--weight", choices=["light", "medium", "heavy"], help="override the kind's weight")
    p.add_argument("--deadline-ms", type=int, help="give up if the task cannot start within this many ms")
    p.add_argument("--device", help="submit as this device: on its own topic {root}/tasks/DEVICE with replies "
                                    "on {root}/replies/DEVICE (what a secured broker allows a device login)")

    p = sub.add_parser("up", help="start broker + 3 agents + a demo workload, print where tasks ran",
                       description="One command demo: the embedded broker on a free port, three "
                                   "agents, a short mixed workload; prints where each task ran and "
                                   "its latency, then exits (Ctrl-C exits cleanly too).")
    p.add_argument("--agents", type=int, default=3, help="number of agents (default: 3)")
    p.add_argument("--tasks", type=int, default=12, help="demo tasks to submit (default: 12)")
    p.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    root_arg(p)
    log_arg(p)

    from fogmesh.cloud_bridge.cli import add_parsers as add_bridge_parsers
    add_bridge_parsers(sub)

    from fogmesh.monitor import add_parser as add_monitor_parser
    add_monitor_parser(sub, broker_arg=broker_arg, root_arg=root_arg, json_arg=json_arg)

    from fogmesh.dashboard.cli import add_parser as add_dashboard_parser
    add_dashboard_parser(sub, broker_arg=broker_arg, root_arg=root_arg, log_arg=log_arg)

    from fogmesh.bench.cli import add_parser as add_bench_parser
    from fogmesh.devices.cli import add_parser as add_device_parser
    from fogmesh.simulator.cli import add_parser as add_simulate_parser
    add_simulate_parser(sub, json_arg=json_arg)
    add_device_parser(sub, broker_arg=broker_arg, root_arg=root_arg, log_arg=log_arg)
    add_bench_parser(sub, json_arg=json_arg, brokers_arg=brokers_arg)

    from fogmesh.enrollment.cli import add_parsers as add_fleet_parsers
    add_fleet_parsers(sub, broker_arg=broker_arg, root_arg=root_arg, json_arg=json_arg, log_arg=log_arg)

    from fogmesh.ops.doctor import add_parser as add_doctor_parser
    from fogmesh.ops.service_cli import add_parser as add_service_parser
    add_service_parser(sub)
    add_doctor_parser(sub, broker_arg=broker_arg, root_arg=root_arg, json_arg=json_arg)

    return parser


def cmd_broker(args: argparse.Namespace) -> int:
    from fogmesh.broker.embedded import EmbeddedBroker, state_path
    from fogmesh.edge_agent.journal import default_state_dir
    setup_logging(args.log_level)
    if args.autosave <= 0:
        print("fogmesh broker: --autosave must be positive", file=sys.stderr)
        return 2
    persistence = None if args.no_persistence else (args.persistence or default_state_dir())
    with EmbeddedBroker(host=args.host, port=args.port, ws_port=args.ws_port, persistence=persistence,
                        autosave_s=args.autosave, auth=args.auth):
        ws = f" and ws://{args.host}:{args.ws_port}/mqtt" if args.ws_port else ""
        kept = f"state kept in {state_path(persistence, args.port)}" if persistence is not None \
            else "nothing kept across a restart"
        auth = f"; logins and ACL from {args.auth}" if args.auth else ""
        print(f"fogmesh: embedded broker on mqtt://{args.host}:{args.port}{ws}; {kept}{auth} (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
        wait_for_signal()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from fogmesh.edge_agent.cli import run
    return run(args)


def cmd_submit(args: argparse.Namespace) -> int:
    from fogmesh.devices.client import submit
    from fogmesh.errors import SubmitTimeout
    try:
        task_args: Any = json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"fogmesh submit: --args is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(task_args, dict):
        print("fogmesh submit: --args must be a JSON object, e.g. '{\"values\": [1, 2]}'", file=sys.stderr)
        return 2
    options = {k: v for k, v in (("task_id", args.id), ("weight", args.weight),
                                 ("deadline_ms", args.deadline_ms)) if v is not None}
    try:
        result = submit(args.kind, task_args, broker=args.broker, root=args.root,
                        timeout=args.timeout, device=args.device, **options)
    except SubmitTimeout as exc:
        print(f"fogmesh submit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.reply.to_dict()))
    return 0 if result.ok else 1


def cmd_up(args: argparse.Namespace) -> int:
    from fogmesh.app.up import run_demo
    setup_logging(args.log_level if args.log_level != "INFO" else "WARNING")
    return run_demo(agents=args.agents, tasks=args.tasks, port=args.port, root=args.root)


def cmd_bridge(args: argparse.Namespace) -> int:
    from fogmesh.cloud_bridge.cli import run_bridge
    return run_bridge(args)


def cmd_cloud_worker(args: argparse.Namespace) -> int:
    from fogmesh.cloud_bridge.cli import run_cloud_worker
    return run_cloud_worker(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    from fogmesh.simulator.cli import run
    return run(args)


def cmd_monitor(args: argparse.Namespace) -> int:
    from fogmesh.monitor import main as monitor_main
    return monitor_main(args)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from fogmesh.dashboard.cli import main as dashboard_main
    setup_logging(args.log_level)
    return dashboard_main(args)


def cmd_device(args: argparse.Namespace) -> int:
    from fogmesh.devices.cli import run
    setup_logging(args.log_level)
    return run(args, wait=wait_for_signal)


def cmd_bench(args: argparse.Namespace) -> int:
    from fogmesh.bench.cli import run
    return run(args)


def cmd_service(args: argparse.Namespace) -> int:
    from fogmesh.ops.service_cli import run
    return run(args, parse=build_parser().parse_args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from fogmesh.ops.doctor import run
    return run(args)


def cmd_bundle(args: argparse.Namespace) -> int:
    from fogmesh.deploy.cli import run_bundle
    return run_bundle(args)


def cmd_deploy(args: argparse.Namespace) -> int:
    from fogmesh.deploy.cli import run_deploy
    setup_logging("WARNING")
    return run_deploy(args)


def cmd_fleet(args: argparse.Namespace) -> int:
    from fogmesh.enrollment import cli
    if args.fleet_command != "serve":          # serve sets its own --log-level
        setup_logging("WARNING")
    return {"enroll": cli.run_enroll, "serve": cli.run_serve, "revoke": cli.run_revoke,
            "list": cli.run_list}[args.fleet_command](args)


def cmd_join(args: argparse.Namespace) -> int:
    from fogmesh.enrollment.cli import run_join
    setup_logging("WARNING")
    return run_join(args)


COMMANDS = {"broker": cmd_broker, "agent": cmd_agent, "submit": cmd_submit, "up": cmd_up,
            "bridge": cmd_bridge, "cloud-worker": cmd_cloud_worker, "simulate": cmd_simulate,
            "device": cmd_device, "monitor": cmd_monitor, "dashboard": cmd_dashboard, "bench": cmd_bench,
            "service": cmd_service, "doctor": cmd_doctor, "bundle": cmd_bundle, "deploy": cmd_deploy,
            "fleet": cmd_fleet, "join": cmd_join}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FogmeshError as exc:
        print(f"fogmesh {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
