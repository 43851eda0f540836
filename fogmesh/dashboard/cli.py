"""``fogmesh dashboard``: the subcommand's options, its run loop, and
``fogmesh dashboard users add|remove|list`` for its logins."""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from fogmesh.errors import FogmeshError


def add_parser(sub: Any, *, broker_arg: Callable, root_arg: Callable, log_arg: Callable) -> None:
    from fogmesh.dashboard.auth import ROLES, default_users_file
    p = sub.add_parser(
        "dashboard", help="serve a live web view of the fleet (agents, flows, charts, dead letters, actuators)",
        description="Serve a web page showing the fleet live: every agent (state, load, queue, battery, "
                    "kinds, counts), bridges and cloud workers, the site as a picture with what flows along "
                    "each edge, charts of tasks/s, reply latency, batteries and backlog over the last "
                    "minutes, dead letters and error replies as they come, camera pipelines, actuators, and "
                    "who pressed which actuator button. Buttons appear only with an operator login on a "
                    "secured broker (python -m fogmesh.broker.secure ... --operator NAME), and, where the "
                    "dashboard has logins of its own (a users file), only for its operators. Without a users "
                    "file it serves this machine only, and behind a proxy (--server-name) without buttons; to "
                    "serve the LAN, add users (fogmesh dashboard users add NAME), and a certificate "
                    "(--tls-cert/--tls-key). A change of the users file takes effect at once: a removed user's "
                    "sessions end. The browser talks only to this process; the broker login stays here.",
        epilog="examples: fogmesh dashboard --broker 'mqtts://ops@broker:8883?ca=ca.crt' --port 8080, then open "
               "http://127.0.0.1:8080 ; on a LAN: fogmesh dashboard users add alice --role operator; fogmesh "
               "dashboard --broker ... --host 0.0.0.0 --server-name dash.farm.lan --tls-cert dashboard.crt "
               "--tls-key dashboard.key")
    broker_arg(p)
    root_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on, IPv4 or IPv6 (default: 127.0.0.1, this machine only; ::1 too). "
                        "Anything else (0.0.0.0: every IPv4 address; ::, every address) needs a users file, so "
                        "that everyone logs in, and --tls-cert/--tls-key (or --insecure-http-logins)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080; 0 picks a free one)")
    p.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="a name the page is reached under (DNS name, or an address behind a proxy); requests "
                        "for any other name are refused (a page on another site pointing its own name here "
                        "cannot use the buttons). Repeatable. --host's address, this machine's addresses (for "
                        "0.0.0.0) and localhost are always served. Without a users file, a dashboard with a "
                        "--server-name has no buttons (behind a proxy, buttons need logins)")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                   help="the address a reverse proxy connects from (e.g. 127.0.0.1); its requests are counted by "
                        "the client it names in X-Forwarded-For (the last entry) or X-Real-IP, so that one "
                        "client's failed logins do not slow everyone behind the proxy. Only for a proxy that "
                        "sets that header itself. Repeatable")
    p.add_argument("--users", type=Path, default=None, metavar="FILE",
                   help=f"the users file (default: $FOGMESH_DASHBOARD_USERS or {default_users_file()}, if it "
                        "exists); with users, everyone logs in and only operators press buttons")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (python -m "
                   "fogmesh.broker.secure --out DIR --dashboard HOST issues one from the site's CA)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--insecure-http-logins", action="store_true",
                   help="take logins over plain HTTP on a --host other than loopback, with no --tls-cert. "
                        "RISK: passwords and session cookies cross the network in clear; anyone on it (shared "
                        "Wi-Fi, a mirrored switch port) may read them and press the buttons as that user. "
                        "Without this flag the dashboard refuses to start that way")
    p.add_argument("--window", type=float, default=600.0, metavar="S",
                   help="seconds of history in the charts (default: 600)")
    p.add_argument("--read-only", action="store_true", help="no actuator buttons, whatever the login may do")
    log_arg(p)
    usub = p.add_subparsers(dest="dashboard_command", metavar="[users]")
    u = usub.add_parser("users", help="the dashboard's own logins: add, remove, list",
                        description="Manage the users file the dashboard reads: one line per user with a role "
                                    "(viewer: sees the page; operator: also presses actuator buttons) and a "
                                    "scrypt hash of the password.")
    u.add_argument("--users", dest="users_file", type=Path, default=None, metavar="FILE",
                   help=f"the users file (default: $FOGMESH_DASHBOARD_USERS or {default_users_file()})")
    uact = u.add_subparsers(dest="users_command", metavar="add|remove|list")
    uact.required = True
    a = uact.add_parser("add", help="add a user, or set an existing user's password and role")
    a.add_argument("name")
    a.add_argument("--role", choices=ROLES, default="viewer", help="viewer (default) or operator")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input instead of asking twice")
    r = uact.add_parser("remove", help="remove a user")
    r.add_argument("name")
    uact.add_parser("list", help="list the users and their roles")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "dashboard_command", None) == "users":
        return users_main(args)
    from fogmesh.dashboard.auth import Users, default_users_file
    from fogmesh.dashboard.exposure import insecure_warning
    from fogmesh.dashboard.server import Dashboard
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    users_file = args.users or default_users_file()
    if args.users is not None and not users_file.exists():
        print(f"fogmesh dashboard: no users file at {users_file}; add a user with "
              f"fogmesh dashboard users --users {users_file} add NAME --role operator", file=sys.stderr)
        return 2
    try:
        users = Users.load(users_file)
        dash = Dashboard(args.broker, root=args.root, host=args.host, port=args.port, window_s=args.window,
                         controls=False if args.read_only else None, users=users,
                         server_names=args.server_name, tls_cert=args.tls_cert, tls_key=args.tls_key,
                         insecure_http_logins=args.insecure_http_logins,
                         trusted_proxies=args.trusted_proxy).start()
    except OSError as exc:
        if isinstance(exc, FogmeshError):
            raise
        print(f"fogmesh dashboard: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}; "
              "pick another --port (0 picks a free one)", file=sys.stderr)
        return 2
    logins = f"{len(users)} user(s) in {users_file}" if users else "none: this machine only"
    print(f"dashboard on {dash.address}  (broker {dash.url}, actuator buttons "
          f"{'on' if dash.controls else 'off'}: {dash.controls_why}; logins: {logins})", flush=True)
    for warning in (insecure_warning(host=args.host, logins=bool(users), tls=dash.tls),
                    dash.exposure_refusal() if dash.controls else None):
        if warning:
            print(f"fogmesh dashboard: warning: {warning}", file=sys.stderr, flush=True)
    try:
        done.wait()
    finally:
        dash.stop()
    return 0


def users_main(args: argparse.Namespace) -> int:
    from fogmesh.dashboard.auth import Users, default_users_file
    path = args.users_file or default_users_file()
    users = Users.load(path)
    if args.users_command == "list":
        if not users:
            print(f"no users in {path}")
        for u in users.users.values():
            print(f"{u.name}\t{u.role}")
        return 0
    if args.users_command == "remove":
        users.without_user(args.name).save()
        print(f"removed {args.name} from {path}")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("fogmesh dashboard users: the two passwords differ; nothing changed", file=sys.stderr)
            return 2
    users.with_user(args.name, args.role, password).save()
    print(f"{args.name} ({args.role}) in {path}; a running dashboard reads it at once")
    return 0
