"""``fogmesh join TOKEN``: a new box becomes itself. It reaches the site's
broker named in the token, checks the broker's CA against the token's pin
(:mod:`.bootstrap`), asks the registrar once over the verified connection
with a one-time key of its own, opens the sealed answer (its id, login and
password, the CA, the bundle trust keys, its site and labels), writes them
with safe modes, runs ``fogmesh doctor`` as that identity, and with
``--service`` installs (and, where systemd runs, starts) its unit.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from fogmesh.broker_url import BrokerUrl
from fogmesh.deploy.signing import BoxKey
from fogmesh.errors import ConnectError, JoinRefused
from fogmesh.identities import JoinRequest, NewIdentity, read_answer
from fogmesh.join_token import JoinToken, read_token
from fogmesh.mqtt import Message, MqttClient
from fogmesh.topics import DEFAULT_ROOT, Topics

from .bootstrap import fetch_ca
from .files import write_atomically

ANSWER_WAIT_S = 30.0


@dataclass(frozen=True)
class Joined:
    identity: NewIdentity
    broker: str                  # the box's broker URL, with its login and ?ca= (no password)
    password_file: Path
    command: list[str]           # the role's command line, after ``fogmesh``
    identity_file: Path


def default_dir() -> Path:
    """Where a box keeps its identity: /etc/fogmesh as root, else ~/.config/fogmesh ($FOGMESH_CONFIG_DIR wins)."""
    if os.environ.get("FOGMESH_CONFIG_DIR"):
        return Path(os.environ["FOGMESH_CONFIG_DIR"])
    return Path("/etc/fogmesh") if os.geteuid() == 0 else Path.home() / ".config" / "fogmesh"


def _box_key(directory: Path) -> BoxKey:
    """The box's one-time key, kept until the join is done: asked again after
    a lost answer, the registrar recognises the same box."""
    path = directory / "join.key"
    if path.exists():
        return BoxKey.from_raw(base64.b64decode(path.read_text()))
    key = BoxKey.generate()
    write_atomically(path, base64.b64encode(key.raw()), mode=0o600)
    return key


def ask(token: JoinToken, *, directory: Path, wanted_id: str | None, timeout: float = ANSWER_WAIT_S) -> NewIdentity:
    """The registrar's answer to this box's join request: its new identity, or :class:`JoinRefused`."""
    url = BrokerUrl.parse(token.broker)
    topics = Topics(token.root)
    ca_file = None
    if url.tls and token.ca_pin:
        pem = fetch_ca(url.host, url.port, topic=topics.fleet_ca, username="fleet-join",
                       password=token.join_password, pin=token.ca_pin, timeout=timeout)
        ca_file = directory / "ca.crt"
        write_atomically(ca_file, pem.encode(), mode=0o644)
    secret = directory / ".fleet-join.password"
    write_atomically(secret, token.join_password.encode(), mode=0o600)
    key = _box_key(directory)
    nonce = secrets.token_hex(12)
    answers: list[bytes] = []
    came = threading.Event()

    def take(m: Message) -> None:
        answers.append(m.payload)
        came.set()

    ask_url = BrokerUrl(host=url.host, port=url.port, tls=url.tls, username="fleet-join",
                        ca_file=str(ca_file) if ca_file else None, password_file=str(secret),
                        websocket=url.websocket, path=url.path)
    client = MqttClient(ask_url, client_id=f"fogmesh-join-{nonce}", on_message=take)
    try:
        try:
            client.start(timeout=timeout)
        except ConnectError as exc:
            raise JoinRefused("unreachable", f"cannot ask the registrar: {exc}") from None
        client.subscribe(topics.fleet_joined(nonce))
        client.publish(topics.fleet_join(nonce), JoinRequest(token.raw, key.public, wanted_id).encode())
        if not came.wait(timeout):
            raise JoinRefused("no_registrar", f"no answer from the registrar within {timeout:g} s: is `fogmesh "
                              "fleet serve` running on the broker's box? (the token is still unused)")
    finally:
        client.stop()
        secret.unlink(missing_ok=True)
    sealed = read_answer(answers[0])
    try:
        return NewIdentity.decode(key.open(sealed))
    except ValueError as exc:
        raise JoinRefused("bad_answer", f"the registrar's answer does not open: {exc}") from None


def write_identity(identity: NewIdentity, *, directory: Path, extra: list[str]) -> Joined:
    """The identity's files (password 0600, CA and trust keys 0644, identity.json) and its command line."""
    url = BrokerUrl.parse(identity.broker)
    creds = directory / "credentials"
    creds.mkdir(parents=True, exist_ok=True, mode=0o700)
    password_file = creds / f"{identity.login}.password"
    write_atomically(password_file, identity.password.encode() + b"\n", mode=0o600)
    ca = ""
    if identity.ca_pem and url.tls:
        write_atomically(directory / "ca.crt", identity.ca_pem.encode(), mode=0o644)
        ca = f"?ca={directory / 'ca.crt'}"
    trust_files = []
    for i, line in enumerate(identity.trust_keys, 1):
        path = directory / f"trust-{i}.pub"
        write_atomically(path, line.encode() + b"\n", mode=0o644)
        trust_files.append(str(path))
    broker = f"{url.scheme}://{identity.login}@{url.host}:{url.port}{ca}"
    root = ["--root", identity.root] if identity.root != DEFAULT_ROOT else []
    if identity.role == "agent":
        command = ["agent", "--id", identity.box_id, "--broker", broker, "--site", identity.site,
                   *[x for label in identity.labels for x in ("--label", label)],
                   *[x for f in trust_files for x in ("--trust-key", f)], *root, *extra]
    elif identity.role == "device":
        command = ["device", *(extra or ["sensor"]), "--id", identity.box_id, "--broker", broker, *root]
    else:
        command = ["bridge", "--site", identity.site, "--edge", broker, *root, *extra]
    record = {"id": identity.box_id, "role": identity.role, "site": identity.site, "labels": list(identity.labels),
              "login": identity.login, "broker": broker, "root": identity.root,
              "password_file": str(password_file), "trust_keys": trust_files, "command": command}
    identity_file = directory / "identity.json"
    write_atomically(identity_file, json.dumps(record, indent=2).encode() + b"\n", mode=0o644)
    (directory / "join.key").unlink(missing_ok=True)
    return Joined(identity, broker, password_file, command, identity_file)


def join(text: str, *, directory: Path, wanted_id: str | None = None, extra: list[str] | None = None,
         timeout: float = ANSWER_WAIT_S) -> Joined:
    token = read_token(text)[0]
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    identity = ask(token, directory=directory, wanted_id=wanted_id or socket.gethostname(), timeout=timeout)
    return write_identity(identity, directory=directory, extra=list(extra or []))


def doctor(joined: Joined, *, state_dir: Path | None) -> tuple[str, int]:
    """``fogmesh doctor`` as the new identity: its table and exit status."""
    from fogmesh.ops.doctor import DoctorOptions, run_checks
    from fogmesh.ops.report import exit_status, render_table
    role = joined.identity.role
    url = joined.broker + ("&" if "?" in joined.broker else "?") + f"password_file={joined.password_file}"
    ident = f"{joined.identity.site}" if role == "bridge" else joined.identity.box_id
    checks = run_checks(DoctorOptions(broker=url, root=joined.identity.root, role=role, ident=ident,
                                      state_dir=state_dir, clock_wait_s=1.0, containers=False,
                                      trust_keys=tuple(joined.command[i + 1] for i, a in enumerate(joined.command[:-1])
                                                       if a == "--trust-key")))
    title = f"fogmesh doctor: {BrokerUrl.parse(joined.broker)} as {role} {ident}"
    return render_table(checks, title=title), exit_status(checks)
