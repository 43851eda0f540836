"""``fogmesh service install [options] ROLE ROLE-OPTIONS``: write (or print)
the systemd unit of one role. The role's options are parsed by the role's own
parser first, so a typo fails here, at the keyboard, not at the next boot."""

from __future__ import annotations

import argparse
import contextlib
import grp
import io
import os
import sys
from pathlib import Path
from typing import Any, Callable

from fogmesh.errors import ServiceError
from fogmesh.ops.units import NOTIFY_ROLES, ROLES, UnitSpec, option_value, unit_name, unit_text

DEFAULT_GROUPS = {"device": ("gpio", "video")}

EPILOG = """\
examples:
  fogmesh service install --print agent --id pi-1 --broker 'mqtts://pi-1@broker.lan:8883?ca=/etc/fogmesh/ca.crt'
  sudo fogmesh service install --password-file /etc/fogmesh/credentials/pi-1.password \\
       agent --id pi-1 --broker 'mqtts://pi-1@broker.lan:8883?ca=/etc/fogmesh/ca.crt'
  sudo fogmesh service install device actuator --id farm-relay --pins deterrent=relay:17
  sudo systemctl daemon-reload && sudo systemctl enable --now fogmesh-agent-pi-1

The service's options come before ROLE; everything after ROLE is the role's command line,
exactly as `fogmesh ROLE --help` describes it.
"""


def _credential(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_parser(sub: Any) -> None:
    p = sub.add_parser("service", help="run fogmesh parts as systemd services (units with a watchdog)",
                       description="Generate systemd units that run fogmesh roles as services: a "
                                   "dedicated user, restart on failure, the state directory, the "
                                   "broker password as a credential, hardening, logs in the journal, "
                                   "and for agents, bridges and cloud workers a watchdog fed by their "
                                   "dispatcher loop.")
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION")
    ssub.required = True
    i = ssub.add_parser("install", help="write a unit to /etc/systemd/system (or print it)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                        description="Write the systemd unit for ROLE, running `fogmesh ROLE "
                                    "ROLE-OPTIONS`.")
    i.add_argument("role", choices=ROLES, help="what the service runs")
    i.add_argument("role_args", nargs=argparse.REMAINDER, metavar="ROLE-OPTIONS",
                   help="the role's command line (after ROLE; the service's own options go before ROLE)")
    i.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    i.add_argument("--unit-dir", default="/etc/systemd/system",
                   help="where to write the unit (default: /etc/systemd/system)")
    i.add_argument("--user", default="fogmesh",
                   help="the service's user; systemd makes it on the fly when it does not exist "
                        "(DynamicUser=) (default: fogmesh)")
    i.add_argument("--groups", default=None, metavar="G1,G2",
                   help="supplementary groups (default: gpio,video for device, none otherwise)")
    i.add_argument("--watchdog", type=float, default=30.0, metavar="S",
                   help="systemd restarts an agent/bridge/cloud worker whose dispatcher loop has not "
                        "turned for S seconds (default: 30; 0: off)")
    i.add_argument("--password-file", metavar="PATH",
                   help="the broker password, handed to the service as a systemd credential "
                        "($FOGMESH_PASSWORD_FILE); e.g. one of python -m fogmesh.broker.secure's credentials/")
    i.add_argument("--credential", type=_credential, action="append", default=[], metavar="NAME=PATH",
                   help="another file handed over as a credential, named in the command line as "
                        "%%d/NAME (e.g. --credential cloud=/etc/fogmesh/cloud.password with "
                        "--cloud 'mqtts://farm@cloud:8883?password_file=%%d/cloud'); repeatable")
    i.add_argument("--python", default=sys.executable,
                   help=f"interpreter with fogmesh installed (default: this one, {sys.executable})")


def _check_role_args(role: str, role_args: list[str], *, parse: Callable[[list[str]], Any]) -> None:
    command = ["device"] if role == "device" else [role]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parse([*command, *role_args])
        except SystemExit as exc:
            if exc.code:
                last = [line for line in err.getvalue().splitlines() if line.strip()][-1:]
                raise ServiceError(f"the {role} options do not parse: "
                                   f"{last[0] if last else 'see fogmesh ' + role + ' --help'} "
                                   f"(the service's own options go before {role})") from None
    if role == "agent" and "--drain" in role_args:
        raise ServiceError("--drain asks a running agent to leave; it is not a service")


def build_spec(args: argparse.Namespace, *, parse: Callable[[list[str]], Any]) -> UnitSpec:
    """``parse``: the whole ``fogmesh`` command line parser (the application
    layer hands it in), so a role's options are checked by the role's own parser."""
    if args.role_args[:1] == ["--"]:
        args.role_args = args.role_args[1:]
    _check_role_args(args.role, args.role_args, parse=parse)
    groups = tuple(g for g in (args.groups.split(",") if args.groups is not None
                               else DEFAULT_GROUPS.get(args.role, ())) if g.strip())
    credentials = list(args.credential)
    if args.password_file:
        credentials.insert(0, ("password", os.path.abspath(args.password_file)))
    try:
        return UnitSpec(role=args.role, argv=tuple(args.role_args), python=args.python, user=args.user,
                        groups=groups, watchdog_s=args.watchdog if args.role in NOTIFY_ROLES else 0.0,
                        credentials=tuple(credentials))
    except ValueError as exc:
        raise ServiceError(str(exc)) from None


def warnings_for(spec: UnitSpec) -> list[str]:
    """What would make the unit fail on this machine, said before it does."""
    notes = []
    if spec.python.startswith("/home/") or spec.python.startswith("/root/"):
        notes.append(f"the interpreter {spec.python} is in a home directory, which the service's user "
                     "cannot read (ProtectHome=, 0700 homes): install fogmesh into /opt/fogmesh "
                     "(python3 -m venv /opt/fogmesh && /opt/fogmesh/bin/pip install ./fogmesh) and "
                     "pass --python /opt/fogmesh/bin/python (docs/raspberry-pi.md)")
    for group in spec.groups:
        try:
            grp.getgrnam(group)
        except KeyError:
            notes.append(f"group {group!r} does not exist here; the unit will not start until it does "
                         f"(on a Raspberry Pi it does), or install with --groups ''")
    urls = [v for v in (option_value(spec.argv, o) for o in ("--broker", "--edge", "--cloud")) if v]
    if any("@" in u and "password_file" not in u for u in urls) and \
            not any(name == "password" for name, _ in spec.credentials):
        notes.append("the broker URL has a login but no password reaches the service: "
                     "add --password-file PATH")
    for _, path in spec.credentials:
        if not Path(path).is_file():
            notes.append(f"credential file {path} does not exist (yet)")
    return notes


def run(args: argparse.Namespace, *, parse: Callable[[list[str]], Any]) -> int:
    try:
        spec = build_spec(args, parse=parse)
    except ServiceError as exc:
        print(f"fogmesh service install: {exc}", file=sys.stderr)
        return 2
    text = unit_text(spec)
    for note in warnings_for(spec):
        print(f"fogmesh service install: warning: {note}", file=sys.stderr)
    if args.print:
        sys.stdout.write(text)
        return 0
    name = unit_name(spec)
    path = Path(args.unit_dir) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    except OSError as exc:
        print(f"fogmesh service install: cannot write {path}: {exc.strerror}. Run it with sudo, "
              f"or print the unit with --print and place it yourself", file=sys.stderr)
        return 2
    print(f"wrote {path}\nstart it now and at every boot:\n"
          f"  sudo systemctl daemon-reload && sudo systemctl enable --now {name}\n"
          f"follow it:  journalctl -u {name} -f     its state:  systemctl status {name}")
    return 0
