"""``fogmesh agent``: its options and its run (and ``--drain``), registered
into the one ``fogmesh`` parser by :mod:`fogmesh.app.cli`."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from fogmesh.cli_args import (
    amqp_arg,
    broker_arg,
    deploy_args,
    deploy_options,
    log_arg,
    option_pair,
    root_arg,
    run_until_signal,
    setup_logging,
    timeout_pair,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="run a fog agent that takes and runs tasks",
                       description="Run a fog agent: subscribes to {root}/tasks, runs tasks in "
                                   "worker processes, replies on each task's reply_to, and "
                                   "announces presence on {root}/presence/{id}. Ctrl-C finishes "
                                   "held tasks and leaves; tasks sent while it is down wait at the "
                                   "broker for its restart.")
    p.add_argument("--id", required=True, help="agent id, unique in the fabric (e.g. pi-kitchen)")
    broker_arg(p)
    root_arg(p)
    p.add_argument("--concurrency", type=int, default=2,
                   help="worker processes, i.e. tasks run at once (default: 2)")
    p.add_argument("--max-queue", type=int, default=1000,
                   help="tasks waiting beyond the running ones before 'busy' errors (default: 1000)")
    p.add_argument("--max-unconfirmed", type=int, default=500, metavar="N",
                   help="flow control: stop taking tasks while N answers wait for the broker's "
                        "acknowledgement, take them again at N/2; untaken tasks wait at the broker, so "
                        "memory stays bounded however slowly replies are read (default: 500)")
    p.add_argument("--device-rate", type=float, default=0.0, metavar="N",
                   help="tasks/s one device may submit to this agent (bursts of 2 s); beyond it, "
                        "'busy' errors (default: 0 = no limit)")
    p.add_argument("--dispatch", default="auto", choices=["auto", "shared", "claim", "amqp"],
                   help="how agents split tasks: MQTT shared subscriptions, claims on "
                        "{root}/claims, a RabbitMQ quorum queue (amqp, with --amqp), or auto-detect "
                        "(default: auto: amqp when --amqp is given)")
    amqp_arg(p, help="RabbitMQ: take tasks from a quorum queue over AMQP at this node "
                     "(amqp://USER:PASS@HOST:5672/); repeat for the cluster's other nodes (failover)")
    p.add_argument("--mqtt", default="auto", choices=["auto", "5", "3.1.1"],
                   help="protocol version. auto: MQTT 5 where the broker accepts it (mosquitto, EMQX), "
                        "so MQTT 5 requesters (mosquitto_rr) are answered on their Response Topic with "
                        "their Correlation Data, else 3.1.1 (the embedded broker, Aedes, RabbitMQ) "
                        "(default: auto)")
    p.add_argument("--presence-period", type=float, default=5.0,
                   help="seconds between presence announcements, 0.1-3600 (default: 5)")
    p.add_argument("--keepalive", type=int, default=15, metavar="S",
                   help="MQTT keep-alive in seconds: a frozen or cut-off agent is found out by the broker, "
                        "its will (offline presence) sent and its tasks taken over, within 1.5x this "
                        "(default: 15)")
    p.add_argument("--timeout", type=timeout_pair, action="append", default=[], metavar="KIND=S",
                   help="override a kind's timeout in seconds; repeatable (e.g. --timeout sleep=2)")
    p.add_argument("--kinds", help="comma-separated kinds to run (default: every installed kind)")
    p.add_argument("--image-kind", action="append", default=[], metavar="NAME=IMAGE[,OPTION...]",
                   help="a kind run in a fresh container of IMAGE per task (podman or docker): the task's args "
                        "as JSON on its stdin, its result as JSON on stdout, exit 2 for bad args; repeatable. "
                        "Options: memory=256m, cpus=0.5 (the container's limits), service (one long-running "
                        "container, started on the first task and stopped after --service-idle; tasks go to it "
                        "over the Unix socket $FOGMESH_SOCKET, a line of JSON each way: topics.md, Container "
                        "kinds). Its timeout: --timeout NAME=S (default 30)")
    p.add_argument("--service-idle", type=float, default=60.0, metavar="S",
                   help="stop a service container after S seconds without a task (default: 60)")
    p.add_argument("--policy", default="least-loaded",
                   help="placement of medium/heavy tasks: local, round-robin, random, least-loaded, "
                        "energy, consolidate, or one from the fogmesh.policies entry points (default: least-loaded)")
    p.add_argument("--policy-option", type=option_pair, action="append", default=[], metavar="K=V",
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
    deploy_args(p)
    p.add_argument("--pipelines", metavar="FILE",
                   help="run the pipelines (camera frame -> task -> actuator command) and triggers "
                        "(sensor reading -> camera rate) in this TOML file; see examples/pipelines.toml")
    log_arg(p)


def run(args: argparse.Namespace) -> int:
    from fogmesh.edge_agent.agent import Agent
    from fogmesh.edge_agent.battery import BatteryModel, parse_battery_spec
    from fogmesh.edge_agent.host_monitor import HostMonitor
    from fogmesh.edge_agent.options import AgentOptions
    from fogmesh.edge_agent.pipelines import load_pipelines
    from fogmesh.edge_agent.policy_registry import make_policy
    from fogmesh.edge_agent.triggers import load_triggers
    from fogmesh.registry import Registry
    from fogmesh.service_notify import ServiceNotifier
    setup_logging(args.log_level)
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
    if args.image_kind:
        try:
            registry = registry.with_kinds(*_image_kinds(args.image_kind, dict(args.timeout), agent=args.id))
        except ValueError as exc:
            print(f"fogmesh agent: {exc}", file=sys.stderr)
            return 2
    if args.timeout:
        registry = registry.with_timeouts({k: v for k, v in dict(args.timeout).items()
                                           if k not in {i.partition("=")[0] for i in args.image_kind}})
    try:
        pipelines = load_pipelines(args.pipelines) if args.pipelines else None
        triggers = load_triggers(args.pipelines) if args.pipelines else None
        agent = Agent(args.id, args.broker, AgentOptions(
            root=args.root, concurrency=args.concurrency, max_queue=args.max_queue,
            max_unconfirmed=args.max_unconfirmed, dispatch=args.dispatch,
            registry=registry, presence_period=args.presence_period, keepalive_s=args.keepalive, policy=policy,
            monitor=HostMonitor(battery_model=model), offer_lease_s=args.offer_lease,
            takeover_grace_s=args.takeover_grace, pipelines=pipelines, triggers=triggers,
            device_rate=args.device_rate, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
            notifier=ServiceNotifier.from_env(), mqtt=args.mqtt, amqp=tuple(args.amqp),
            service_idle_s=args.service_idle, **deploy_options(args)))
    except ValueError as exc:     # DeployRefused too: a trust key that cannot be read
        print(f"fogmesh agent: {exc}", file=sys.stderr)
        return 2
    return run_until_signal(agent)


def _image_kinds(specs: list[str], timeouts: dict[str, float], *, agent: str) -> list[Any]:
    """``--image-kind NAME=IMAGE[,...]``: kinds run in containers, if this box has an engine."""
    from fogmesh.container_services import service_kind
    from fogmesh.containers import Engine, image_kind, parse_image_kind
    from fogmesh.edge_agent.journal import default_state_dir
    parsed = [parse_image_kind(spec) for spec in specs]
    engine = Engine.detect()
    if engine is None:
        raise ValueError("--image-kind needs a container engine (podman or docker) on this box; install one "
                         "(Debian: apt-get install podman runc) or drop the option")
    kinds = []
    for k in parsed:
        timeout = timeouts.get(k.name, 30.0)
        if k.service:
            kinds.append(service_kind(k.name, k.image, engine=engine, agent=agent, state_dir=default_state_dir(),
                                      timeout_s=timeout, memory=k.memory, cpus=k.cpus))
        else:
            kinds.append(image_kind(k.name, k.image, engine=engine, timeout_s=timeout, memory=k.memory, cpus=k.cpus,
                                    owner=agent))
    return kinds


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
