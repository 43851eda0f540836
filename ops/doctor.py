"""``fogmesh doctor``: what is wrong with this box, before the first task fails.

Runs the broker checks (reach, TLS, login, MQTT 5, WebSockets, ACL, shared
subscriptions, clock) and the host checks (Python, state directory, GPIO,
camera), prints one line each (ok / info / warn / fail / skip) and, under a
problem, one line saying what to do. Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fogmesh.cli_args import amqp_arg
from fogmesh.mqtt import BrokerUrl
from fogmesh.ops.broker_checks import (
    ROLES,
    BrokerTarget,
    broker_version,
    check_acl,
    check_amqp,
    check_clock,
    check_login,
    check_mqtt5,
    check_reach,
    check_shared,
    check_tls,
    check_websockets,
    restart_losses,
)
from fogmesh.ops.host_checks import (
    check_camera,
    check_container_engine,
    check_pins,
    check_python,
    check_state_dir,
    check_trust_keys,
)
from fogmesh.ops.report import Check, exit_status, render_json, render_table
from fogmesh.topics import Topics

WS_PORTS = (9001, 8080, 8083)


@dataclass(frozen=True)
class DoctorOptions:
    broker: str
    root: str
    role: str = "agent"
    ident: str | None = None
    state_dir: Path | None = None
    pins: str | None = None
    pin_factory: str = "auto"
    camera: str | None = None
    ws_ports: tuple[int, ...] = WS_PORTS
    clock_wait_s: float = 6.0
    timeout: float = 5.0
    trust_keys: tuple[str, ...] = ()
    amqp: tuple[str, ...] = ()
    container_image: str | None = None
    containers: bool = True              # False: the container engine is not tried (fogmesh join's own run)
    container_kinds: bool = False        # this box's agents run container kinds: an engine that cannot is a failure


def run_checks(options: DoctorOptions, *, progress: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in order; a broker check that cannot run after an
    earlier failure says so (skip) instead of piling up the same error."""
    checks: list[Check] = []

    def add(check: Check) -> Check:
        checks.append(check)
        if progress is not None:
            progress(check)
        return check

    url = BrokerUrl.parse(options.broker)
    ident = options.ident or url.username or f"doctor-{socket.gethostname().split('.')[0]}"
    add(check_python())
    reach, live = check_reach(BrokerTarget(url=url, topics=Topics(options.root), timeout=options.timeout))
    for check in reach:
        add(check)
    reached = live is not None
    # the later checks ask the first node that answers (a failover list: the next ones after it)
    target = BrokerTarget(url=live or url, topics=Topics(options.root), role=options.role, ident=ident,
                          timeout=options.timeout)
    tls_ok = reached and add(check_tls(target)).status != "fail"
    session = None
    if tls_ok:
        login, session = check_login(target)
        add(login)
    else:
        add(Check("login", "skip", "not tried: no node of the broker can be reached" if not reached
                  else "not tried: TLS does not verify"))
    try:
        if session is not None:
            add(check_mqtt5(target))
            add(check_websockets(target, options.ws_ports))
            acl = add(check_acl(target))
            if acl.status == "ok":
                add(check_shared(target, amqp=bool(options.amqp)))
            else:
                add(Check("shared subs", "skip", "not checked: the probe topics are not allowed"))
            add(check_clock(target, session, wait_s=options.clock_wait_s))
            add(restart_losses(broker_version(target, session), role=options.role))
        else:
            for name in ("mqtt 5", "websockets", "acl", "shared subs", "clock", "restarts"):
                add(Check(name, "skip", "not checked: no connection"))
    finally:
        if session is not None:
            session.close()
    if options.amqp:                     # AMQP is its own connection: checked whatever MQTT said
        for check in check_amqp(options.amqp, root=options.root, timeout=options.timeout):
            add(check)
    if options.state_dir is not None:
        state_dir = options.state_dir
    else:
        from fogmesh.edge_agent.journal import default_state_dir
        state_dir = default_state_dir()
    add(check_state_dir(state_dir))
    add(check_pins(options.pins, factory_kind=options.pin_factory))
    add(check_camera(options.camera))
    add(check_trust_keys(options.trust_keys, role=options.role))
    add(check_container_engine(options.container_image,
                               kinds=options.container_kinds or options.container_image is not None)
        if options.containers
        else Check("containers", "skip", "not checked here (fogmesh doctor checks the container engine)"))
    return checks


def add_parser(sub: Any, *, broker_arg: Callable, root_arg: Callable, json_arg: Callable) -> None:
    p = sub.add_parser("doctor", help="check this box and its broker before deploying (ok/warn/fail + fixes)",
                       description="Check what breaks deployments: the broker (reachable, TLS chain and "
                                   "expiry, login, MQTT 5, WebSockets, shared subscriptions, what the ACL "
                                   "lets this login do), this box (Python and packages, the state "
                                   "directory, GPIO pins, the camera) and its clock against its peers'. "
                                   "Each check prints ok / info / warn / fail / skip and, for a problem, "
                                   "what to do. Exit status 1 when a check failed.")
    broker_arg(p)
    root_arg(p)
    p.add_argument("--as", dest="role", choices=ROLES, default="agent",
                   help="the role this box plays, whose own topics the ACL check probes (default: agent)")
    p.add_argument("--id", help="its agent id, bridge site, device id or operator login "
                                "(default: the login in --broker, else doctor-HOSTNAME)")
    p.add_argument("--state-dir", type=Path,
                   help="state directory to check (default: $FOGMESH_STATE_DIR or ~/.local/state/fogmesh)")
    p.add_argument("--pins", metavar="SPEC", help="actuator pins to check, as `fogmesh device actuator --pins`")
    p.add_argument("--pin-factory", choices=["auto", "mock"], default="auto",
                   help="auto: this board's pins, or mock pins where there are none (default: auto)")
    p.add_argument("--camera", metavar="SOURCE", help="camera to read a frame from: camera:N, video:PATH, ...")
    p.add_argument("--ws-port", type=int, action="append", metavar="PORT",
                   help=f"port to try MQTT over WebSockets on; repeatable (default: {', '.join(map(str, WS_PORTS))})")
    p.add_argument("--clock-wait", type=float, default=6.0, metavar="S",
                   help="seconds to wait for a peer's presence to compare clocks with (default: 6)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per network check (default: 5)")
    amqp_arg(p, help="RabbitMQ: the --amqp URLs agents use; checks each node holds the task queue")
    p.add_argument("--trust-key", action="append", default=[], metavar="FILE",
                   help="the agent's --trust-key files, to check (fleet deployment)")
    p.add_argument("--containers", action="store_true",
                   help="this box's agents run container kinds (--image-kind): a container engine that cannot "
                        "start a container fails the check (without it, a warning: exit status 0)")
    p.add_argument("--container-image", metavar="IMAGE",
                   help="an image on this box to start a container from, to check the container engine (default: "
                        "the smallest one it has; nothing is pulled); implies --containers")
    json_arg(p)


def run(args: argparse.Namespace) -> int:
    from fogmesh.cli_args import setup_logging
    setup_logging("ERROR")          # the checks' findings are the output, not library warnings
    options = DoctorOptions(broker=args.broker, root=args.root, role=args.role, ident=args.id,
                            state_dir=args.state_dir, pins=args.pins, pin_factory=args.pin_factory,
                            camera=args.camera, ws_ports=tuple(args.ws_port or WS_PORTS),
                            clock_wait_s=args.clock_wait, timeout=args.timeout, trust_keys=tuple(args.trust_key),
                            amqp=tuple(args.amqp), container_image=args.container_image,
                            container_kinds=args.containers)
    title = f"fogmesh doctor: {BrokerUrl.parse(args.broker)} as {args.role}" + (f" {args.id}" if args.id else "")
    interactive = sys.stderr.isatty() and not args.json

    def progress(c: Check) -> None:     # network checks take seconds: show where it is
        print(f"\r  checked {c.name:<14}", end="", file=sys.stderr, flush=True)
    checks = run_checks(options, progress=progress if interactive else None)
    if interactive:
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)
    sys.stdout.write(render_json(checks, title=title) if args.json else render_table(checks, title=title))
    return exit_status(checks)
