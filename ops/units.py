"""systemd unit files for each fogmesh role, as pure text.

A unit runs the very command line an operator would type (``fogmesh agent
--id pi-1 ...``) under a dedicated user, restarts it when it fails, keeps its
journal and outbox in ``StateDirectory=``, hands it the broker password as a
credential (never on the command line), and hardens it without taking away
what a role needs: the device role keeps ``/dev``, ``/sys`` and the ``gpio`` /
``video`` groups, because gpiozero and the camera live there.

Agents, cloud workers and bridges are ``Type=notify`` units with a watchdog:
they report ``READY=1`` once online and ``WATCHDOG=1`` from their dispatcher
loop only (:mod:`fogmesh.service_notify`), so systemd restarts a process whose
loop has hung although its MQTT connection, and so its presence, live on.

Pure (no file system, no ``sys``): the caller passes the interpreter path, so
the same spec renders the same text everywhere and tests compare strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ROLES = ("agent", "device", "bridge", "cloud-worker", "broker")
NOTIFY_ROLES = ("agent", "bridge", "cloud-worker")
# Roles whose command is `fogmesh <role> ...` (the device role's argv starts
# with sensor|camera|actuator, which the device command takes itself).
EXIT_USAGE = 2    # fogmesh's "fix the configuration" exit status: restarting cannot help

_UNIT_CHARS = re.compile(r"[^A-Za-z0-9:_.\\-]")
_PLAIN_ARG = re.compile(r"^[A-Za-z0-9_@%+=:,./\-]+$")


@dataclass(frozen=True)
class UnitSpec:
    """What one service runs and how.

    ``argv``: the role's options as typed after ``fogmesh <role>``;
    ``credentials``: name -> file; systemd copies each file, readable by the
    service only, to ``%d/<name>`` (``password`` becomes
    ``$FOGMESH_PASSWORD_FILE``; others can be named in a URL as
    ``?password_file=%d/<name>``)."""

    role: str
    argv: tuple[str, ...]
    python: str
    user: str = "fogmesh"
    groups: tuple[str, ...] = ()
    watchdog_s: float = 30.0
    credentials: tuple[tuple[str, str], ...] = ()
    environment: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}: one of {', '.join(ROLES)}")
        if not self.python.startswith("/"):
            raise ValueError(f"the interpreter must be an absolute path, got {self.python!r}")
        if self.watchdog_s < 0:
            raise ValueError("the watchdog period cannot be negative (0 turns it off)")
        for name, path in self.credentials:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"credential name {name!r}: letters, digits, '_', '.', '-' only")
            if not path.startswith("/"):
                raise ValueError(f"credential {name}: the file must be an absolute path, got {path!r}")


def option_value(argv: tuple[str, ...] | list[str], option: str) -> str | None:
    """The value of ``--option V`` or ``--option=V`` in ``argv`` (the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg[len(option) + 1:]
    return value


def escape_unit_part(text: str) -> str:
    """An id as part of a unit name (what ``systemd-escape`` does to it)."""
    return _UNIT_CHARS.sub(lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode()), text.replace("/", "-"))


def unit_name(spec: UnitSpec) -> str:
    """``fogmesh-agent-pi-1.service``: role plus the id that tells two units of
    one role apart (``--id``, the bridge's ``--site``, the device command)."""
    if spec.role == "bridge":
        ident = option_value(spec.argv, "--site")
    elif spec.role == "device":
        kind = spec.argv[0] if spec.argv else None
        ident = "-".join(x for x in (kind, option_value(spec.argv, "--id")) if x) or None
    elif spec.role == "broker":
        ident = None
    else:
        ident = option_value(spec.argv, "--id")
    name = f"fogmesh-{spec.role}" + (f"-{escape_unit_part(ident)}" if ident else "")
    return name + ".service"


def quote_arg(arg: str) -> str:
    """One argument as systemd's ExecStart= reads it: double quotes where
    needed, ``\\`` and ``"`` escaped, ``$`` doubled (no variable expansion).
    The ``%d/`` (credentials) and ``%S/`` (state) specifiers stay, so
    ``?password_file=%d/cloud`` names a credential; any other ``%`` is literal."""
    text = re.sub(r"%(?![dS]/)", "%%", arg).replace("$", "$$")
    if _PLAIN_ARG.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hardening(role: str) -> list[str]:
    lines = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
             "ProtectKernelModules=yes", "ProtectControlGroups=yes", "RestrictSUIDSGID=yes",
             "RestrictRealtime=yes", "LockPersonality=yes", "RestrictNamespaces=yes",
             "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "UMask=0077"]
    if role != "device":
        # gpiozero's sysfs and lgpio back-ends and the camera need /sys and /dev.
        lines += ["ProtectKernelTunables=yes", "PrivateDevices=yes", "ProtectClock=yes"]
    return lines


def unit_text(spec: UnitSpec) -> str:
    """The unit file: [Unit], [Service], [Install]."""
    name = unit_name(spec)[:-len(".service")]
    command = ["device"] if spec.role == "device" else [spec.role]
    exec_start = " ".join(quote_arg(a) for a in (spec.python, "-m", "fogmesh", *command, *spec.argv))
    describe = name.removeprefix("fogmesh-").replace("-", " ", 1)
    unit = ["[Unit]", f"Description=fogmesh {describe}",
            "Wants=network-online.target", "After=network-online.target",
            "StartLimitIntervalSec=0", ""]
    service = ["[Service]"]
    if spec.role in NOTIFY_ROLES:
        service += ["Type=notify", "NotifyAccess=main"]
        if spec.watchdog_s:
            service.append(f"WatchdogSec={spec.watchdog_s:g}")
    else:
        service.append("Type=exec")
    service += [f"ExecStart={exec_start}",
                "Restart=on-failure", "RestartSec=2",
                f"RestartPreventExitStatus={EXIT_USAGE}",
                # SIGTERM to the main process only: it finishes held tasks in its
                # workers, then leaves; stragglers get SIGKILL after the timeout.
                "KillMode=mixed", "TimeoutStopSec=30",
                f"User={spec.user}", "DynamicUser=yes"]
    if spec.groups:
        service.append("SupplementaryGroups=" + " ".join(spec.groups))
    service += ["StateDirectory=fogmesh", "StateDirectoryMode=0700",
                "Environment=FOGMESH_STATE_DIR=%S/fogmesh", "Environment=PYTHONUNBUFFERED=1"]
    for key, value in spec.environment:
        service.append(f"Environment={quote_arg(f'{key}={value}')}")
    for cred, path in spec.credentials:
        service.append(f"LoadCredential={cred}:{path}")
        if cred == "password":
            service.append("Environment=FOGMESH_PASSWORD_FILE=%d/password")
    service += _hardening(spec.role)
    service += [f"SyslogIdentifier={name}", "StandardOutput=journal", "StandardError=journal", ""]
    install = ["[Install]", "WantedBy=multi-user.target", ""]
    header = [f"# {name}.service: generated by `fogmesh service install {spec.role}`;",
              "# edit the command line there and install again rather than here.", ""]
    return "\n".join(header + unit + service + install)
