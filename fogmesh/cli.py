"""``fogmesh``: the one command-line entry point.

Subcommands import their parts lazily, so ``fogmesh submit`` on a sensor
gateway does not load the broker or the worker pool.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any, Sequence

from fogmesh import __version__
from fogmesh.errors import FogmeshError
from fogmesh.topics import DEFAULT_ROOT

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"

EPILOG = """\
Quick start (no external broker needed):
  fogmesh up                                   # broker + 3 agents + a demo workload

By hand, in three terminals:
  fogmesh broker --port 1883                   # embedded broker
  fogmesh agent --id pi-1 --broker mqtt://127.0.0.1:1883
  fogmesh submit sum --args '{"values": [1, 2, 3]}'

Watch everything:  mosquitto_sub -t 'fog/#' -v     Topic tree: topics.md
"""


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT,
                   help=f"topic root shared by every part of one fabric (default: {DEFAULT_ROOT})")


def broker_url(text: str) -> str:
    """An argparse type: a broker URL without a password in it (a password on
    the command line shows up in ``ps`` and shell history)."""
    from fogmesh.mqtt import BrokerUrl
    try:
        url = BrokerUrl.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if url.password is not None:
        raise argparse.ArgumentTypeError(
            "do not put the password in the URL: set FOGMESH_PASSWORD, or FOGMESH_PASSWORD_FILE, "
            "or add ?password_file=PATH to the URL")
    return text


BROKER_HELP = ("broker URL: mqtt://host:port, or mqtts://user@host:8883?ca=ca.crt with the password in "
               "$FOGMESH_PASSWORD, $FOGMESH_PASSWORD_FILE or ?password_file=PATH")


def _broker_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=DEFAULT_BROKER, type=broker_url,
                   help=f"{BROKER_HELP} (default: {DEFAULT_BROKER})")


def _log_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging verbosity (default: INFO)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")


def _brokers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--brokers", default="mosquitto,amqtt", help="comma list (default: mosquitto,amqtt)")


def _timeout_pair(text: str) -> tuple[str, float]:
    kind, sep, seconds = text.partition("=")
    try:
        if not sep or float(seconds) <= 0:
            raise ValueError
        return kind, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KIND=SECONDS (e.g. sleep=2), got {text!r}") from None


def _option_pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, value


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
    _log_arg(p)

    p = sub.add_parser("agent", help="run a fog agent that takes and runs tasks",
                       description="Run a fog agent: subscribes to {root}/tasks, runs tasks in "
                                   "worker processes, replies on each task's reply_to, and "
                                   "announces presence on {root}/presence/{id}. Ctrl-C finishes "
                                   "held tasks and leaves; tasks sent while it is down wait at the "
                                   "broker for its restart.")
    p.add_argument("--id", required=True, help="agent id, unique in the fabric (e.g. pi-kitchen)")
    _broker_arg(p)
    _root_arg(p)
    p.add_argument("--concurrency", type=int, default=2,
                   help="worker processes, i.e. tasks run at once (default: 2)")
    p.add_argument("--max-queue", type=int, default=1000,
                   help="tasks waiting beyond the running ones before 'busy' errors (default: 1000)")
    p.add_argument("--device-rate", type=float, default=0.0, metavar="N",
                   help="tasks/s one device may submit to this agent (bursts of 2 s); beyond it, "
                        "'busy' errors (default: 0 = no limit)")
    p.add_argument("--dispatch", default="auto", choices=["auto", "shared", "claim"],
                   help="how agents split tasks: MQTT shared subscriptions, claims on "
                        "{root}/claims, or auto-detect (default: auto)")
    p.add_argument("--presence-period", type=float, default=5.0,
                   help="seconds between presence announcements (default: 5)")
    p.add_argument("--timeout", type=_timeout_pair, action="append", default=[], metavar="KIND=S",
                   help="override a kind's timeout in seconds; repeatable (e.g. --timeout sleep=2)")
    p.add_argument("--kinds", help="comma-separated kinds to run (default: every installed kind)")
    p.add_argument("--policy", default="least-loaded",
                   help="placement of medium/heavy tasks: local, round-robin, random, least-loaded, "
                        "energy, consolidate, or one from the fogmesh.policies entry points (default: least-loaded)")
    p.add_argument("--policy-option", type=_option_pair, action="append", default=[], metavar="K=V",
                   help="policy option, repeatable: e.g. low=50 recover=60 accept=70 fit=best "
                        "(energy), seed=7 (random)")
    p.add_argument("--battery", type=float, metavar="PERCENT",
                   help="act out a battery at this charge that does not drain (testbeds)")
    p.add_argument("--battery-model", metavar="SPEC",
                   help="modelled battery: capacity_wh=6.7,percent=80,idle_w=1.4,task_w=1.6,"
                        "solar=0:2.0;3600:0 (seconds:watts)")
    p.add_argument("--offer-lease", type=float, default=1.0, metavar="S",
                   help="seconds a peer has to accept an offloaded task (default: 1)")
    p.add_argument("--takeover-grace", type=float, default=2.0, metavar="S",
                   help="seconds a peer may be offline before its tasks are taken over and its "
                        "MQTT session rescued (default: 2)")
    p.add_argument("--drain", action="store_true",
                   help="do not run an agent: tell the running agent --id to finish its work and "
                        "leave, and wait until it has")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics (counters, queue, battery, latency histogram) on "
                        "http://ADDR:PORT/metrics (default: off)")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address for --metrics-port (default: 127.0.0.1)")
    p.add_argument("--pipelines", metavar="FILE",
                   help="run the pipelines in this TOML file (camera frame -> task -> actuator "
                        "command; see examples/pipelines.toml)")
    _log_arg(p)

    p = sub.add_parser("submit", help="submit a task and print its reply",
                       description="Publish one task and print the JSON reply. Exit status: 0 ok, "
                                   "1 the task failed, 2 no reply / cannot connect.")
    p.add_argument("kind", help="task kind, e.g. echo, sum, stats, sleep, sha256")
    p.add_argument("--args", default="{}", help='task args as a JSON object (default: {})')
    _broker_arg(p)
    _root_arg(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (default: 10)")
    p.add_argument("--id", help="task id / idempotency key (default: random)")
    p.add_argument("--weight", choices=["light", "medium", "heavy"], help="override the kind's weight")
    p.add_argument("--deadline-ms", type=int, help="give up if the task cannot start within this many ms")

    p = sub.add_parser("up", help="start broker + 3 agents + a demo workload, print where tasks ran",
                       description="One command demo: the embedded broker on a free port, three "
                                   "agents, a short mixed workload; prints where each task ran and "
                                   "its latency, then exits (Ctrl-C exits cleanly too).")
    p.add_argument("--agents", type=int, default=3, help="number of agents (default: 3)")
    p.add_argument("--tasks", type=int, default=12, help="demo tasks to submit (default: 12)")
    p.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    _root_arg(p)
    _log_arg(p)

    p = sub.add_parser("bridge", help="link the site's edge broker to a cloud broker (store-and-forward)",
                       description="Take heavy tasks from the fog agents (as peer bridge-SITE), commit "
                                   "them to an on-disk outbox, forward them to the cloud broker, and "
                                   "bring results and actuation commands back. While the uplink is "
                                   "down the outbox fills (bounded) and is replayed in order.")
    p.add_argument("--site", required=True, help="site name, unique per edge broker (e.g. farm-3)")
    p.add_argument("--edge", default=DEFAULT_BROKER, type=broker_url,
                   help=f"edge broker URL (default: {DEFAULT_BROKER})")
    p.add_argument("--cloud", required=True, type=broker_url,
                   help="cloud broker URL, e.g. mqtts://farm@cloud.example:8883?password_file=/run/secrets/cloud "
                        "(the edge and the cloud each take ?password_file=; $FOGMESH_PASSWORD serves both)")
    _root_arg(p)
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
    _log_arg(p)

    p = sub.add_parser("cloud-worker", help="run tasks in the cloud behind a shared subscription",
                       description="A worker on the cloud broker: takes tasks forwarded by site "
                                   "bridges from {cloud-root}/tasks (shared with every other cloud "
                                   "worker through $share), runs them with the same kinds as agents, "
                                   "replies to the bridge. Start as many as the load needs.")
    p.add_argument("--cloud", required=True, type=broker_url, help="cloud broker URL")
    p.add_argument("--id", default=None, help="worker id (default: cloud-<host>-<pid>)")
    p.add_argument("--cloud-root", default="fogmesh/v1", help="topic root on the cloud broker (default: fogmesh/v1)")
    p.add_argument("--concurrency", type=int, default=2, help="worker processes (default: 2)")
    _log_arg(p)

    p = sub.add_parser("monitor", help="live view of the fleet: agents, batteries, tasks/s, bridges, pipelines",
                       description="A live terminal table of every agent (state, cpu, queue, battery, "
                                   "tasks/s, offloads), cloud bridge (link, backlog) and pipeline, from "
                                   "their retained announcements. --once prints one snapshot and exits.")
    _broker_arg(p)
    _root_arg(p)
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--wait", type=float, default=2.0,
                   help="with --once: seconds to collect announcements first (default: 2)")
    _json_arg(p)

    from bench.cli import add_parser as add_bench_parser
    from devices.cli import add_parser as add_device_parser
    from simulator.cli import add_parser as add_simulate_parser
    add_simulate_parser(sub, json_arg=_json_arg)
    add_device_parser(sub, broker_arg=_broker_arg, root_arg=_root_arg, log_arg=_log_arg)
    add_bench_parser(sub, json_arg=_json_arg, brokers_arg=_brokers_arg)

    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _wait_for_signal(finished: Any = None) -> None:
    """Block until SIGINT or SIGTERM (or until ``finished(0)`` says the work is over)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        if finished is not None and finished(0):
            return


def _run_until_signal(agent: Any) -> int:
    """Start an agent (waiting for its broker), run it until Ctrl-C, SIGTERM or
    a drain ends it, then stop it cleanly."""
    agent.start(wait_for_broker=True)
    try:
        _wait_for_signal(agent.wait)
    finally:
        agent.stop()
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from broker.embedded import EmbeddedBroker
    _setup_logging(args.log_level)
    with EmbeddedBroker(host=args.host, port=args.port):
        print(f"fogmesh: embedded broker on mqtt://{args.host}:{args.port} (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
        _wait_for_signal()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from edge_agent.agent import Agent
    from edge_agent.battery import BatteryModel, parse_battery_spec
    from edge_agent.monitor import HostMonitor
    from edge_agent.pipelines import load_pipelines
    from edge_agent.policies import make_policy
    from fogmesh.registry import Registry
    _setup_logging(args.log_level)
    if args.drain:
        return _drain_agent(args)
    try:
        policy = make_policy(args.policy, **dict(args.policy_option))
        model = parse_battery_spec(args.battery_model) if args.battery_model else None
    except (ValueError, TypeError) as exc:
        print(f"fogmesh agent: {exc}", file=sys.stderr)
        return 2
    if args.battery is not None:
        model = BatteryModel(percent=args.battery, idle_w=0.0, task_w=0.0)
    registry = Registry.from_entry_points()
    if args.kinds:
        registry = registry.only(k.strip() for k in args.kinds.split(",") if k.strip())
    if args.timeout:
        registry = registry.with_timeouts(dict(args.timeout))
    try:
        pipelines = load_pipelines(args.pipelines) if args.pipelines else None
        agent = Agent(args.id, args.broker, root=args.root, concurrency=args.concurrency,
                      max_queue=args.max_queue, dispatch=args.dispatch, registry=registry,
                      presence_period=args.presence_period, policy=policy,
                      monitor=HostMonitor(battery_model=model), offer_lease_s=args.offer_lease,
                      takeover_grace_s=args.takeover_grace, pipelines=pipelines,
                      device_rate=args.device_rate, metrics_port=args.metrics_port,
                      metrics_addr=args.metrics_addr)
    except ValueError as exc:
        print(f"fogmesh agent: {exc}", file=sys.stderr)
        return 2
    return _run_until_signal(agent)


def _drain_agent(args: argparse.Namespace) -> int:
    """Send {"op": "drain"} to the agent's control topic; wait for its offline presence."""
    from fogmesh import codec
    from fogmesh.mqtt import MqttClient
    from fogmesh.topics import Topics
    topics = Topics(args.root)
    gone = threading.Event()

    def on_message(m: Any) -> None:
        try:
            if codec.decode(m.payload).get("state") == "offline":
                gone.set()
        except Exception:
            pass

    client = MqttClient(args.broker, on_message=on_message)
    client.start(fail_fast=True)
    try:
        client.subscribe(topics.presence(args.id))
        client.publish(topics.agent_control(args.id), codec.encode({"op": "drain"}))
        print(f"fogmesh agent: asked {args.id} to drain; waiting for it to leave", file=sys.stderr)
        if not gone.wait(600):
            print(f"fogmesh agent: {args.id} did not leave within 10 minutes", file=sys.stderr)
            return 1
    finally:
        client.stop()
    print(f"fogmesh agent: {args.id} drained and left", file=sys.stderr)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from devices.client import submit
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
                        timeout=args.timeout, **options)
    except SubmitTimeout as exc:
        print(f"fogmesh submit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.reply.to_dict()))
    return 0 if result.ok else 1


def cmd_up(args: argparse.Namespace) -> int:
    from fogmesh.up import run_demo
    _setup_logging(args.log_level if args.log_level != "INFO" else "WARNING")
    return run_demo(agents=args.agents, tasks=args.tasks, port=args.port, root=args.root)


def _aggregate_rule(text: str) -> tuple[str, float]:
    pattern, sep, seconds = text.rpartition("=")
    if not sep or not pattern:
        raise ValueError(f"--aggregate expects PATTERN=SECONDS, got {text!r}")
    return pattern, float(seconds)


def cmd_bridge(args: argparse.Namespace) -> int:
    from cloud_bridge.bridge import Bridge
    from edge_agent.journal import default_state_dir
    _setup_logging(args.log_level)
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
                    resend_after_s=args.resend_after)
    bridge.start()
    try:
        _wait_for_signal()
    finally:
        bridge.stop()
    return 0


def cmd_cloud_worker(args: argparse.Namespace) -> int:
    import os
    import socket
    from edge_agent.agent import Agent
    from edge_agent.placement import LocalPolicy
    _setup_logging(args.log_level)
    worker_id = args.id or f"cloud-{socket.gethostname().split('.')[0]}-{os.getpid()}"
    agent = Agent(worker_id, args.cloud, root=args.cloud_root, concurrency=args.concurrency,
                  dispatch="auto", policy=LocalPolicy())
    return _run_until_signal(agent)


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.cli import run
    return run(args)


def cmd_monitor(args: argparse.Namespace) -> int:
    from fogmesh.monitor import run
    if args.json and not args.once:
        print("fogmesh monitor: --json needs --once", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    return run(args.broker, root=args.root, once=args.once, as_json=args.json, wait=args.wait,
               stop=lambda seconds: done.wait(seconds))


def cmd_device(args: argparse.Namespace) -> int:
    from devices.cli import run
    _setup_logging(args.log_level)
    return run(args, wait=_wait_for_signal)


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.cli import run
    return run(args)


COMMANDS = {"broker": cmd_broker, "agent": cmd_agent, "submit": cmd_submit, "up": cmd_up,
            "bridge": cmd_bridge, "cloud-worker": cmd_cloud_worker, "simulate": cmd_simulate,
            "device": cmd_device, "monitor": cmd_monitor, "bench": cmd_bench}


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
