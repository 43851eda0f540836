"""``fogmesh fleet enroll|serve|revoke|list`` and ``fogmesh join``."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from fogmesh import codec
from fogmesh.broker_url import BrokerUrl
from fogmesh.errors import InvalidMessage, JoinRefused
from fogmesh.identities import IdentityRecord, RegistrarInfo
from fogmesh.join_token import ROLES
from fogmesh.mqtt import Message, MqttClient
from fogmesh.topics import Topics

EXIT_USAGE = 2


def duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"a duration like 30m, 1h, 2d; got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def add_parsers(sub: Any, *, broker_arg: Callable[..., None], root_arg: Callable[..., None],
                json_arg: Callable[..., None], log_arg: Callable[..., None]) -> None:
    p = sub.add_parser("fleet", help="grow and shrink the fleet: join tokens, the registrar, revoking, listing",
                       description="Boxes join with a one-time token (fogmesh fleet enroll, then fogmesh join "
                                   "TOKEN on the box); the registrar on the broker's box (fogmesh fleet serve) "
                                   "mints their logins; fogmesh fleet revoke takes one away. topics.md, Fleet.")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION")
    fsub.required = True
    e = fsub.add_parser("enroll", help="print one-time join tokens (and QR codes) for new boxes")
    e.add_argument("--site", required=True, help="the site the boxes join")
    e.add_argument("--labels", default="", help="comma-separated labels (deploy --to label:L)")
    e.add_argument("--role", choices=ROLES, default="agent", help="what the boxes run (default: agent)")
    e.add_argument("--expires", type=duration, default=3600.0, metavar="DURATION",
                   help="how long the tokens work: 30m, 1h, 2d (default: 1h)")
    e.add_argument("--count", type=int, default=1, help="how many tokens, one per box (default: 1)")
    e.add_argument("--id", dest="box_id", help="the box's id (default: its host name, made unique by the registrar)")
    e.add_argument("--key", required=True, help="the operator's key (fogmesh bundle keygen), which the registrar "
                                                "trusts")
    e.add_argument("--join-broker", metavar="URL", help="the broker as the new boxes reach it (default: --broker's "
                                                        "host and port)")
    e.add_argument("--out", metavar="FILE", help="also write the tokens there, one a line (for SD card images)")
    e.add_argument("--no-qr", action="store_true", help="print no QR codes")
    broker_arg(e)
    root_arg(e)
    s = fsub.add_parser("serve", help="the registrar, on the broker's box: answer joins, mint and revoke logins")
    s.add_argument("--dir", type=Path, default=Path("/etc/fogmesh"),
                   help="the site's files: passwd, acl, ca.crt, credentials/ (python -m fogmesh.broker.secure "
                        "--out DIR --fleet); default /etc/fogmesh")
    s.add_argument("--trust-key", action="append", required=True, metavar="FILE",
                   help="the operator's public key (.pub): tokens and revokes signed by it are taken, and new "
                        "boxes get it as their deployment trust key; repeatable")
    s.add_argument("--site", help="enroll boxes of this site only (default: any site a token names)")
    s.add_argument("--state-dir", type=Path, help="the spent tokens and identities (default: $FOGMESH_STATE_DIR/"
                                                  "fleet or ~/.local/state/fogmesh/fleet)")
    s.add_argument("--reload-pid-file", type=Path, metavar="FILE",
                   help="mosquitto's pid file: SIGHUP it after each change (mosquitto.conf's pid_file)")
    s.add_argument("--reload-command", metavar="CMD",
                   help="or a command that makes the broker re-read its files (systemctl reload mosquitto); "
                        "the embedded broker (fogmesh broker --auth DIR) needs neither")
    s.add_argument("--clear-after", type=float, default=8.0, metavar="S",
                   help="clear a revoked box's retained presence and reports S seconds after the revoke, once its "
                        "peers have taken over its tasks (default: 8)")
    broker_arg(s)
    root_arg(s)
    log_arg(s)
    r = fsub.add_parser("revoke", help="take a box's login away: refused at once, its presence cleared")
    r.add_argument("box", help="the box's id (fogmesh fleet list)")
    r.add_argument("--key", required=True, help="the operator's key, which the registrar trusts")
    r.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="wait this long for the registrar and the box's presence to go (default: 30)")
    broker_arg(r)
    root_arg(r)
    l_ = fsub.add_parser("list", help="every identity: role, site, labels, state, last seen")
    broker_arg(l_)
    root_arg(l_)
    json_arg(l_)
    j = sub.add_parser("join", help="join the fleet with a token: this box gets its own identity",
                       description="Reach the site's broker the token names, prove the token once, and get this "
                                   "box's own login, the site's CA, the deployment trust key, its id, site and "
                                   "labels; write them (DIR, 0600 for the password), run fogmesh doctor as it, "
                                   "and with --service install its systemd unit. Options after -- go to the role's "
                                   "command line (e.g. -- camera --fps 2 for a device).")
    j.add_argument("token", help="the token (fmj1....), or a file holding it (baked into an SD card image)")
    j.add_argument("--dir", type=Path, help="where to write the identity (default: /etc/fogmesh as root, else "
                                            "~/.config/fogmesh; $FOGMESH_CONFIG_DIR)")
    j.add_argument("--id", dest="wanted_id", help="the id to ask for when the token names none (default: the host "
                                                  "name)")
    j.add_argument("--service", action="store_true", help="install the role's systemd unit and start it")
    j.add_argument("--unit-dir", default="/etc/systemd/system", help="where the unit goes (default: "
                                                                      "/etc/systemd/system)")
    j.add_argument("--python", default=sys.executable, help="interpreter with fogmesh (default: this one)")
    j.add_argument("--no-doctor", action="store_true", help="do not run fogmesh doctor afterwards")
    j.add_argument("--timeout", type=float, default=30.0, metavar="S", help="wait for the registrar (default: 30)")
    j.add_argument("role_args", nargs="*", metavar="-- ROLE-OPTIONS",
                   help="after --: more options for the role's command")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _retained(url: str, filters: list[str], *, settle_s: float = 0.7, timeout: float = 10.0) -> dict[str, bytes]:
    """The retained messages on ``filters`` (quiet for ``settle_s`` once subscribed)."""
    got: dict[str, bytes] = {}
    last = [time.monotonic()]

    def take(m: Message) -> None:
        got[m.topic] = m.payload
        last[0] = time.monotonic()
    client = MqttClient(url, on_message=take)
    client.start(timeout=timeout, fail_fast=True)
    try:
        for f in filters:
            client.subscribe(f)
        last[0] = time.monotonic()
        while time.monotonic() - last[0] < settle_s:
            time.sleep(0.05)            # retained messages come right after the SUBACKs
    finally:
        client.stop()
    return got


def run_enroll(args: argparse.Namespace) -> int:
    from fogmesh.deploy.signing import SigningKey
    from fogmesh.join_token import JoinToken, b64url, sign_token

    from .bootstrap import pin_of
    from .qr import terminal_qr
    key = SigningKey.load(args.key)
    topics = Topics(args.root)
    got = _retained(args.broker, [topics.fleet_registrar])
    raw = got.get(topics.fleet_registrar)
    if not raw:
        _say(f"fogmesh fleet enroll: no registrar on {BrokerUrl.parse(args.broker)}: start `fogmesh fleet serve` "
             "on the broker's box first (its login comes from python -m fogmesh.broker.secure --fleet)")
        return EXIT_USAGE
    info = RegistrarInfo.decode(raw)
    if key.public.key_id not in info.trusted:
        _say(f"fogmesh fleet enroll: the registrar does not trust key {key.public.key_id} (it trusts "
             f"{', '.join(info.trusted) or 'none'}): give it --trust-key {args.key}.pub")
        return EXIT_USAGE
    if info.site and info.site != args.site:
        _say(f"fogmesh fleet enroll: the registrar enrolls boxes of site {info.site}, not {args.site}")
        return EXIT_USAGE
    if info.state != "online":
        _say("fogmesh fleet enroll: warning: the registrar is offline now; the tokens work once it is back")
    url = BrokerUrl.parse(args.broker)
    join = BrokerUrl.parse(args.join_broker) if args.join_broker else url
    pin = None
    if join.tls:
        if not url.ca_file:
            _say("fogmesh fleet enroll: give the site's CA in --broker (?ca=/etc/fogmesh/ca.crt): boxes check the "
                 "broker against it")
            return EXIT_USAGE
        pin = pin_of(Path(url.ca_file).read_text())
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    if args.count > 1 and args.box_id:
        _say("fogmesh fleet enroll: --id names one box; with --count, boxes are named by their host names")
        return EXIT_USAGE
    expires = int(time.time() + args.expires)
    lines = []
    for _ in range(args.count):
        try:
            token = JoinToken(token_id=b64url(secrets.token_bytes(12)), role=args.role, site=args.site,
                              expires=expires, broker=f"{join.scheme}://{join.host}:{join.port}",
                              join_password=info.join_password, labels=labels, ca_pin=pin, root=args.root,
                              box_id=args.box_id)
        except ValueError as exc:
            _say(f"fogmesh fleet enroll: {exc}")
            return EXIT_USAGE
        text = sign_token(token, key)
        lines.append(text)
        print(text, flush=True)
        if not args.no_qr and sys.stdout.isatty():
            print(terminal_qr(text))
    if args.out:
        Path(args.out).write_text("".join(t + "\n" for t in lines))
        os.chmod(args.out, 0o600)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
    _say(f"{args.count} token(s) for {args.role}s of {args.site}"
         f"{' (' + ','.join(labels) + ')' if labels else ''}, each good for one box until {when}: on the box, "
         "fogmesh join TOKEN --service")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from fogmesh.cli_args import setup_logging, wait_for_signal
    from fogmesh.deploy.signing import PublicKey, TrustStore
    from fogmesh.edge_agent.journal import default_state_dir

    from .serve import Registrar, ServeOptions
    setup_logging(args.log_level)
    keys = [PublicKey.parse(k) for k in args.trust_key]
    if not (args.dir / "passwd").exists():
        _say(f"fogmesh fleet serve: no {args.dir / 'passwd'}: make the site's files first (python -m "
             f"fogmesh.broker.secure --out {args.dir} --fleet --operator ops ...)")
        return EXIT_USAGE
    state = args.state_dir or Path(default_state_dir()) / "fleet"
    registrar = Registrar(ServeOptions(directory=args.dir, broker=args.broker, trust=TrustStore(keys, who="the "
                                       "registrar trusts"), trust_lines=tuple(k.line() for k in keys),
                                       state_dir=state, root=args.root, site=args.site,
                                       reload_pid_file=args.reload_pid_file, reload_command=args.reload_command,
                                       clear_after_s=args.clear_after))
    registrar.start()
    _say(f"fogmesh fleet serve: registrar for {args.site or 'any site'} on {BrokerUrl.parse(args.broker)}; "
         f"logins in {args.dir} (Ctrl-C to stop)")
    try:
        wait_for_signal()
    finally:
        registrar.stop()
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from fogmesh.deploy.manifest import Signed
    from fogmesh.deploy.signing import SigningKey

    from .registrar import revoke_document
    key = SigningKey.load(args.key)
    t = Topics(args.root)
    seen: dict[str, bytes] = {}
    changed = threading.Condition()

    def take(m: Message) -> None:
        with changed:
            seen[m.topic] = m.payload
            changed.notify_all()
    client = MqttClient(args.broker, on_message=take)
    client.start(timeout=10, fail_fast=True)
    try:
        client.subscribe(t.fleet_identity(args.box))
        client.subscribe(t.presence(args.box))
        signed = Signed(revoke_document(args.box, ts=time.time(), request_id=uuid.uuid4().hex)).signed_with(key.sign)
        client.publish(t.fleet_requests, signed.encode())

        def revoked() -> bool:
            raw = seen.get(t.fleet_identity(args.box))
            try:
                return bool(raw) and IdentityRecord.decode(raw or b"", box=args.box).state == "revoked"
            except InvalidMessage:
                return False
        deadline = time.monotonic() + args.wait
        with changed:
            while not revoked() and changed.wait(max(0.0, deadline - time.monotonic())):
                pass
            if not revoked():
                _say(f"fogmesh fleet revoke: the registrar did not revoke {args.box} within {args.wait:g} s: is "
                     "`fogmesh fleet serve` running and trusting this key? (its log says why it refused)")
                return 1
            _say(f"{args.box} revoked: its login is refused from now on; its connections were dropped")
            while seen.get(t.presence(args.box)) and changed.wait(max(0.0, deadline - time.monotonic())):
                pass
        if seen.get(t.presence(args.box)):
            _say(f"warning: {args.box}'s presence is still retained after {args.wait:g} s")
            return 1
        _say(f"{args.box}'s presence and reports are cleared: fogmesh deploy no longer counts it")
        return 0
    finally:
        client.stop()


def run_list(args: argparse.Namespace) -> int:
    from fogmesh.announcements import Presence
    t = Topics(args.root)
    got = _retained(args.broker, [t.fleet_identities_filter, t.presence_filter])
    now = time.time()
    rows = []
    for topic, raw in sorted(got.items()):
        box = t.box_of_identity(topic)
        if box is None or not raw:
            continue
        try:
            r = IdentityRecord.decode(raw, box=box)
        except InvalidMessage:
            continue
        seen = None
        presence = got.get(t.presence(box)) if box and "/" not in box else None
        if presence:
            try:
                p = Presence.decode(presence, agent=box)
                seen = {"state": p.state, "ago_s": round(now - p.ts, 1)}
            except InvalidMessage:
                pass
        rows.append({**r.to_dict(), "last_seen": seen})
    if args.json:
        print(json.dumps({"identities": rows}))
        return 0
    print(f"{'id':<20} {'role':<9} {'site':<10} {'labels':<16} {'state':<8} {'source':<7} last seen")
    for row in rows:
        s = row["last_seen"]
        last = f"{s['state']} {s['ago_s']:.0f} s ago" if s else "-"
        print(f"{row['id']:<20} {row['role']:<9} {row['site'] or '-':<10} {','.join(row['labels']) or '-':<16} "
              f"{row['state']:<8} {row['source']:<7} {last}")
    return 0


def run_join(args: argparse.Namespace) -> int:
    from .join import default_dir, doctor, join
    text = args.token
    if not text.startswith("fmj1.") and Path(text).is_file():
        text = Path(text).read_text().split()[0]
    directory = args.dir or default_dir()
    extra = list(args.role_args)
    try:
        joined = join(text, directory=directory, wanted_id=args.wanted_id, extra=extra, timeout=args.timeout)
    except JoinRefused as exc:
        _say(f"fogmesh join: refused ({exc.code}): {exc}")
        return EXIT_USAGE
    ident = joined.identity
    _say(f"joined {ident.site} as {ident.role} {ident.box_id} (labels {','.join(ident.labels) or '-'}); identity in "
         f"{joined.identity_file}, password in {joined.password_file} (0600)")
    status = 0
    if not args.no_doctor:
        table, status = doctor(joined, state_dir=Path(os.environ["FOGMESH_STATE_DIR"])
                               if os.environ.get("FOGMESH_STATE_DIR") else None)
        sys.stdout.write(table)
    command = " ".join(["fogmesh", *joined.command])
    if not args.service:
        _say(f"run it:  FOGMESH_PASSWORD_FILE={joined.password_file} {command}\n"
             f"or as a service:  sudo fogmesh join ... --service (or fogmesh service install --password-file "
             f"{joined.password_file} {' '.join(joined.command)})")
        return status
    return _install_service(args, joined) or status


def _install_service(args: argparse.Namespace, joined: Any) -> int:
    import shutil
    import subprocess

    from fogmesh.ops.units import NOTIFY_ROLES, UnitSpec, unit_name, unit_text
    role = joined.command[0]
    spec = UnitSpec(role=role, argv=tuple(joined.command[1:]), python=args.python,
                    groups=("gpio", "video") if role == "device" else (), watchdog_s=30.0 if role in NOTIFY_ROLES
                    else 0.0, credentials=(("password", str(joined.password_file)),))
    path = Path(args.unit_dir) / unit_name(spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(unit_text(spec))
        path.chmod(0o644)
    except OSError as exc:
        _say(f"fogmesh join: cannot write {path}: {exc.strerror}; run it with sudo")
        return EXIT_USAGE
    name = unit_name(spec)
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl") and args.unit_dir == "/etc/systemd/system":
        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", name]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                _say(f"fogmesh join: {' '.join(cmd)} failed: {done.stderr.strip()}")
                return 1
        _say(f"wrote {path}; {name} is enabled and started (journalctl -u {name} -f)")
    else:
        _say(f"wrote {path} (no systemd running here); start it now and at every boot:\n"
             f"  sudo systemctl daemon-reload && sudo systemctl enable --now {name}")
    return 0


def load_identity(directory: Path) -> dict[str, Any]:
    """identity.json as ``fogmesh join`` wrote it."""
    doc = codec.decode((directory / "identity.json").read_bytes())
    return doc if isinstance(doc, dict) else {}
