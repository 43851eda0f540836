"""``fogmesh bench``: the benchmarks' options, registered into the one
``fogmesh`` parser by :mod:`fogmesh.app.cli`. Each benchmark prints a table and
takes ``--json`` for the same figures."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any, Callable


def add_parser(sub: Any, *, json_arg: Callable, brokers_arg: Callable) -> None:
    p = sub.add_parser("bench", help="benchmarks that print a table (and --json)",
                       description="Benchmarks. Each prints a table; --json prints the same figures.")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True
    b = bsub.add_parser("rtt", help="round trip and throughput: raw MQTT vs fogmesh vs Celery+Redis",
                        description="Request/reply round trip (p50/p99) of raw paho-MQTT, a fogmesh "
                                    "agent started with default flags (fogmesh agent --id X --broker URL), "
                                    "and Celery+Redis, plus pipelined throughput with 64 in flight, on "
                                    "mosquitto and on the embedded amqtt broker; each system in "
                                    "--rounds alternating rounds, median and spread shown; then "
                                    "fogmesh and raw paired, taking turns request by request, "
                                    "in as many rounds (the p50 target is judged on those).")
    b.add_argument("--rounds", type=int, default=5,
                   help="alternating rounds per system; the table shows their median and spread (default: 5)")
    b.add_argument("--requests", type=int, default=1000, help="round trips per system per round (default: 1000)")
    b.add_argument("--pipelined", type=int, default=2000,
                   help="tasks in each round's throughput run (default: 2000)")
    b.add_argument("--inflight", type=int, default=64, help="tasks in flight for throughput (default: 64)")
    brokers_arg(b)
    b.add_argument("--no-celery", action="store_true", help="skip Celery+Redis")
    b.add_argument("--tuned", action="store_true",
                   help="also an agent with --concurrency 1 --log-level WARNING, labelled (tuned)")
    b.add_argument("--no-mqtt5", dest="mqtt5", action="store_false",
                   help="skip the MQTT 5 request/response row on mosquitto")
    b.add_argument("--against", metavar="PYTHON",
                   help="A/B: also run an agent of another fogmesh version, the one installed for this "
                        "interpreter (e.g. git worktree add /tmp/old REV; python -m venv /tmp/oldv; "
                        "/tmp/oldv/bin/pip install -e /tmp/old; then --against /tmp/oldv/bin/python), and "
                        "ask it and this version's agent in turn, request by request")
    json_arg(b)
    b = bsub.add_parser("placement", help="placement policies side by side on skewed load",
                        description="Four agents, every task submitted to one hot agent: p50/p99 "
                                    "latency, makespan and spread per placement policy, plus the "
                                    "added latency of one offload hop, on mosquitto and amqtt.")
    b.add_argument("--tasks", type=int, default=2000, help="medium sha256 tasks per policy (default: 2000)")
    b.add_argument("--agents", type=int, default=4, help="agents (default: 4)")
    b.add_argument("--hops", type=int, default=1000, help="medium echoes for the hop latency (default: 1000)")
    b.add_argument("--policies", default="local,round-robin,random,least-loaded,energy",
                   help="comma list of policies (default: all shipped)")
    brokers_arg(b)
    json_arg(b)
    b = bsub.add_parser("bridge", help="heavy-task throughput through the bridge and backlog replay",
                        description="Heavy tasks through the cloud bridge to two cloud workers "
                                    "(edge and cloud mosquitto), then a cloud outage with a backlog "
                                    "that is replayed when the cloud returns.")
    b.add_argument("--tasks", type=int, default=2000, help="tasks for the throughput run (default: 2000)")
    b.add_argument("--backlog", type=int, default=10_000, help="backlog built during the outage (default: 10000)")
    json_arg(b)
    b = bsub.add_parser("camera", help="frames processed and frame-to-actuation latency per frame rate",
                        description="A camera streams frames to agent pi-1, whose pipeline runs "
                                    "detect (HOG) on each and pulses a mock relay: % of frames "
                                    "processed and frame-to-actuation latency at each rate with 1 "
                                    "and 3 agents; plus binary vs base64 frame format.")
    b.add_argument("--rates", default="0.5,1,2,5,10", help="frames per second (default: 0.5,1,2,5,10)")
    b.add_argument("--agents", default="1,3", help="agent counts (default: 1,3)")
    b.add_argument("--size", default="1280x720", help="frame size (default: 1280x720)")
    b.add_argument("--seconds", type=float, default=12.0, help="streaming time per case (default: 12)")
    b.add_argument("--min-frames", type=int, default=6, help="at least this many frames per case (default: 6)")
    b.add_argument("--max-age-ms", type=int, default=2000, help="older frames are skipped (default: 2000)")
    b.add_argument("--in-flight", type=int, default=4, help="pipeline tasks in flight (default: 4)")
    json_arg(b)

    b = bsub.add_parser("footprint", help="an agent's memory, idle CPU and start-up time; installed size and "
                                          "the time from a fresh venv to a joined agent",
                        description="Starts `fogmesh agent` with default flags on the embedded broker, "
                                    "waits for its first answer (start-up time), lets it idle, and "
                                    "prints unique (USS), proportional (PSS) and resident (RSS) memory per "
                                    "process (agent, zygote, workers) and idle CPU. Then (unless --no-install, "
                                    "a few minutes): a fresh venv with this checkout pip-installed in it (not "
                                    "editable): its site-packages size and largest distributions; and the time "
                                    "from `python -m venv` through pip install, `fogmesh fleet enroll` and "
                                    "`fogmesh join TOKEN` to the agent's retained presence online, on a "
                                    "secured broker with a registrar (docs/raspberry-pi.md). Sizes and times "
                                    "have no raw-MQTT counterpart, so no ratio to raw MQTT is printed.")
    b.add_argument("--idle-s", type=float, default=30.0, metavar="S",
                   help="seconds of idling to measure CPU over (default: 30)")
    b.add_argument("--no-install", dest="install", action="store_false",
                   help="skip the slow part: the installed size and the fresh venv to a joined agent")
    b.add_argument("--source", metavar="PATH",
                   help="what to pip install: a checkout (copied first), a wheel or an sdist "
                        "(default: the checkout this fogmesh runs from)")
    b.add_argument("--site-broker", choices=("mosquitto", "embedded"), default="mosquitto",
                   help="the broker the new box joins: mosquitto with the shipped TLS, logins and ACL "
                        "configuration, or the embedded one with --auth (default: mosquitto)")
    b.add_argument("--no-pip-cache", dest="pip_cache", action="store_false",
                   help="pip install --no-cache-dir: nothing from pip's cache, as on a box's first install "
                        "(default: pip's cache and configuration as they are)")
    json_arg(b)
    b = bsub.add_parser("fleet", help="what a site costs as it grows: N agents, M devices, one mosquitto",
                        description="For each N in --agents: starts N `fogmesh agent --concurrency 1` processes "
                                    "and --devices simulated devices on one mosquitto on this machine, then "
                                    "measures idle and under --rate tasks/s: broker messages/s and CPU, agent "
                                    "CPU and memory, presence bytes/s each agent publishes and receives, the "
                                    "presence period, task p50/p99. Target: presence received per agent flat "
                                    "(within 2x) from the smallest N to the largest. N = 200 needs about "
                                    "10 GB of memory and several minutes.")
    b.add_argument("--agents", default="10,50,100,200", help="fleet sizes (default: 10,50,100,200)")
    b.add_argument("--devices", type=int, default=1000, help="simulated devices (default: 1000)")
    b.add_argument("--rate", type=float, default=200.0, help="tasks per second under load (default: 200)")
    b.add_argument("--seconds", type=float, default=30.0, metavar="S", help="each measuring window (default: 30)")
    b.add_argument("--settle-s", type=float, default=10.0, metavar="S",
                   help="after the agents are up, before measuring (default: 10)")
    json_arg(b)
    b = bsub.add_parser("dashboard", help="the web dashboard with a big site: responsiveness and memory over time",
                        description="Runs `fogmesh dashboard` on a mosquitto carrying a generated site "
                                    "(--agents agents' presence, --rate tasks/s with replies, dead letters, "
                                    "a bridge), opens the page in headless Chromium for --minutes, and samples "
                                    "the page's JavaScript heap, DOM nodes, render time and round trip, and "
                                    "the dashboard process's CPU and memory. Needs chromium and playwright "
                                    "(pip install 'fogmesh[bench]').")
    b.add_argument("--agents", type=int, default=50, help="agents in the site (default: 50)")
    b.add_argument("--rate", type=float, default=200.0, help="tasks per second (default: 200)")
    b.add_argument("--minutes", type=float, default=10.0, help="how long the page stays open (default: 10)")
    b.add_argument("--window", type=float, default=120.0, metavar="S",
                   help="the dashboard's chart window; shorter than the run, so the run shows memory "
                        "once it has filled (default: 120)")
    b.add_argument("--sample-s", type=float, default=30.0, metavar="S", help="seconds between samples (default: 30)")
    json_arg(b)
    b = bsub.add_parser("flood", help="an agent's memory under a flood, with replies read fast, slowly or never",
                        description="One agent (default flags) on mosquitto; a device process publishes N echo "
                                    "tasks at QoS 1 as fast as the broker takes them; its replies are read as they "
                                    "come, at 1,000/s, or never. Prints the agent's RSS at rest, its peak and the "
                                    "growth per N and reader: flat means bounded by configuration, not by N.")
    b.add_argument("--tasks", default="20000,200000", help="flood sizes (default: 20000,200000)")
    b.add_argument("--readers", default="fast,slow,none", help="how replies are read (default: fast,slow,none)")
    b.add_argument("--flat-mb", type=float, default=10.0, metavar="MB",
                   help="'flat': the largest N's growth within this of the smallest's (default: 10)")
    b.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per row (default: 600)")
    b.add_argument("--brokers", default="amqtt,mosquitto",
                   help="brokers to flood (default: amqtt,mosquitto; Debian 12's mosquitto 2.0.11 does not keep "
                        "its in-flight window under a backlog, see topics.md, Flow control)")
    json_arg(b)
    b = bsub.add_parser("deploy", help="a bundle pushed to 1, 10 and 50 agents: time, bytes per agent, memory",
                        description="N fogmesh agent processes on one mosquitto; a signed bundle of --size-mb "
                                    "pushed as fogmesh deploy does; seconds until all report it running, the chunk "
                                    "bytes each took in (goal: at most 1.1x the bundle), the largest RSS growth "
                                    "of an agent, and raw MQTT subscribers fetching the same chunks.")
    b.add_argument("--agents", default="1,10,50", help="fleet sizes (default: 1,10,50)")
    b.add_argument("--size-mb", type=float, default=5.0, metavar="MB", help="bundle size (default: 5)")
    b.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per row (default: 300)")
    json_arg(b)
    b = bsub.add_parser("cluster", help="agents on a 3-node RabbitMQ cluster vs one mosquitto, and a node's loss",
                        description="Tasks/s of a 50 ms sleep kind with 1, 2, 4 and 8 agents (one worker each) on "
                                    "a 3-node RabbitMQ cluster (quorum queue over AMQP) and on one mosquitto, and "
                                    "the time to recover from a node stopped under load. Needs rabbitmq-server.")
    b.add_argument("--agents", default="1,2,4,8", help="fleet sizes (default: 1,2,4,8)")
    b.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per row (default: 120)")
    json_arg(b)
    b = bsub.add_parser("containers", help="a kind in a worker process, a service container, a container per task",
                        description="The same function (a sum) as a worker-process kind, a service container kind "
                                    "and a per-task container kind on one agent, and raw MQTT request/reply: "
                                    "sequential round trips, p50/p95/mean, ratios to raw MQTT and to the worker "
                                    "kind; the service's first task (its container's start). Needs podman or docker.")
    b.add_argument("--image", default="python:3.11-slim",
                   help="an image with python3 (default: python:3.11-slim)")
    b.add_argument("--tasks", type=int, default=200, help="round trips per system (default: 200)")
    b.add_argument("--container-tasks", type=int, default=30,
                   help="round trips of the per-task container kind (default: 30)")
    json_arg(b)
    b = bsub.add_parser("hostile", help="agents under hostile messages on every topic: none dies, nothing lost",
                        description="Two `fogmesh agent` processes on a mosquitto started here, a "
                                    "fire-and-forget device sending valid tasks, and a stream of malformed "
                                    "messages on every topic of topics.md (some retained; wrong types, deep "
                                    "nesting, over-long ids and values, presences speaking for another box). "
                                    "Prints valid tasks answered, agents alive, `fogmesh monitor --once`, "
                                    "each bad message counted against what was expected, and the log lines.")
    b.add_argument("--seconds", type=float, default=60.0, help="how long the stream runs (default: 60)")
    b.add_argument("--rate", type=float, default=60.0, help="hostile messages per second (default: 60)")
    b.add_argument("--task-rate", type=float, default=30.0, help="valid tasks per second (default: 30)")
    b.add_argument("--seed", type=int, default=37, help="the stream's seed, to repeat a run (default: 37)")
    json_arg(b)
    b = bsub.add_parser("faults", help="nothing lost, nothing doubled: one table over every fault",
                        description="Runs the system as an operator would (CLI processes, kill -9, "
                                    "a restarted broker, a full disk) with a FogClient device and a "
                                    "plain paho client counting every reply; prints fault | broker | "
                                    "submitted | answered | lost | run twice | duplicate replies | "
                                    "time to recover. Disk faults mount a small tmpfs (root). Exit "
                                    "status 1 if any row lost or doubled a task.")
    b.add_argument("--faults", default="", help="comma list of faults (default: all)")
    b.add_argument("--random", type=int, default=0, metavar="N",
                   help="run N seeded random fault schedules instead (agents SIGKILLed, SIGTERMed or "
                        "SIGSTOPped, the broker SIGKILLed or SIGTERMed) on each broker of --brokers "
                        "(mosquitto with autosave 30 s, as shipped; amqtt: the embedded broker); "
                        "each row names its seed")
    b.add_argument("--seed", type=int, action="append", default=[], metavar="S",
                   help="replay the random schedule of seed S (repeatable; with --random N, run "
                        "as well as the N seeds from --first-seed)")
    b.add_argument("--first-seed", type=int, default=1, help="--random N runs seeds from this one (default: 1)")
    b.add_argument("--duration", type=float, default=90.0, help="seconds per random schedule (default: 90)")
    b.add_argument("--down-minutes", type=float, default=1.0,
                   help="how long the box is off in the power-cut fault (default: 1)")
    brokers_arg(b)
    json_arg(b)


# Each has run(args) -> report and render(report) -> table; faults has its own
# main (its exit status says whether a row lost or doubled a task).
REPORTING = ("rtt", "fleet", "footprint", "bridge", "camera", "dashboard", "placement", "flood", "deploy", "cluster",
             "containers", "hostile")


def run(args: argparse.Namespace) -> int:
    if args.bench == "faults":
        from fogmesh.bench.faults import main as faults_main
        return faults_main(args)
    if args.bench not in REPORTING:
        return 2
    module = importlib.import_module(f"fogmesh.bench.{args.bench}")
    report = module.run(args)
    print(json.dumps(report, indent=2) if args.json else module.render(report))
    return 0
