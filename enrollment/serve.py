"""``fogmesh fleet serve``: the registrar, on the broker's box. It holds the
site's authority to mint logins (the operator's box need not be on): it
answers join requests on ``fleet/join/+``, revokes boxes on signed requests
on ``fleet/requests``, and keeps the broker's ``passwd`` and ``acl`` files
(mosquitto re-reads them on SIGHUP, which drops no other client; the
embedded broker watches them itself). Decisions: :mod:`.registrar`.

One thread takes the messages in turn (paho's thread only queues them), so
two joins never race for an id or a file.
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import secrets
import shlex
import signal
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from fogmesh import codec
from fogmesh.broker.logins import acl_with_block, acl_without_login, parse_acl, parse_passwd, with_login, without_login
from fogmesh.broker.secure import FLEET_JOIN
from fogmesh.deploy.manifest import Signed
from fogmesh.deploy.signing import TrustStore, seal
from fogmesh.errors import DeployRefused, JoinRefused
from fogmesh.identities import IdentityRecord, JoinRequest, RegistrarInfo, answer_refused, answer_sealed
from fogmesh.mqtt import BrokerUrl, Message, MqttClient, Will, probe_connect
from fogmesh.topics import Topics

from .files import SpentFile, write_atomically
from .handover import Handover
from .registrar import RESERVED, Again, Mint, Refused, Site, decide_join, decide_revoke, guess_role
from .spent import Spent, key_hash

log = logging.getLogger("fogmesh.enrollment")

CLEAR_AFTER_S = 8.0       # a revoked box's retained documents are cleared this long after the revoke
LOGIN_WAIT_S = 10.0       # how long a new login may take to work (the broker re-reading its files)
MAX_BOXES = 5000          # boxes whose retained documents the registrar remembers


@dataclass(frozen=True)
class ServeOptions:
    directory: Path                      # passwd, acl, ca.crt, credentials/fleet-join.password
    broker: str                          # the registrar's own login
    trust: TrustStore
    trust_lines: tuple[str, ...]
    state_dir: Path
    root: str
    site: str | None = None
    reload_pid_file: Path | None = None
    reload_command: str | None = None
    clear_after_s: float = CLEAR_AFTER_S


class Registrar:
    def __init__(self, o: ServeOptions) -> None:
        self.o = o
        self.topics = Topics(o.root)
        ca = o.directory / "ca.crt"
        self.site = Site(root=o.root, site=o.site, ca_pem=ca.read_text() if ca.exists() else None,
                         trust_lines=o.trust_lines)
        o.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spent_file = SpentFile(o.state_dir / "spent.json")
        self.spent = self.spent_file.load()
        self.records_path = o.state_dir / "identities.json"
        self.records = self._load_records()
        join_pw = o.directory / "credentials" / f"{FLEET_JOIN}.password"
        self.join_password = join_pw.read_text().strip() if join_pw.exists() else ""
        self.inbox: queue.Queue[Message | None] = queue.Queue()
        self.retained: dict[str, str] = {}          # topic -> box, for revoked boxes' documents to clear
        # box -> {topic: last payload} of its retained documents (presence, reports...), the newest boxes kept
        self.docs: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        # box -> when it was revoked (monotonic); those revoked before this start: clear at once
        self.revoked_at: dict[str, float] = {b: time.monotonic() - o.clear_after_s for b, r in self.records.items()
                                             if r.state == "revoked"}
        self.client = MqttClient(o.broker, on_message=self.inbox.put, will=Will(
            self.topics.fleet_registrar, self._info("offline"), retain=True))
        self._thread = threading.Thread(target=self._run, name="registrar", daemon=True)
        self.stopped = threading.Event()

    # -- files -----------------------------------------------------------------------------
    def _load_records(self) -> dict[str, IdentityRecord]:
        try:
            doc = codec.decode(self.records_path.read_bytes())
        except FileNotFoundError:
            return {}
        return {k: IdentityRecord.decode(codec.encode(v), box=k) for k, v in doc.items()}

    def _save_records(self) -> None:
        write_atomically(self.records_path, codec.encode({k: r.to_dict() for k, r in self.records.items()}),
                         mode=0o600)

    def _files(self) -> tuple[str, str]:
        acl = self.o.directory / "acl"
        return (self.o.directory / "passwd").read_text(), acl.read_text() if acl.exists() else ""

    def _write_files(self, passwd: str, acl: str) -> None:
        write_atomically(self.o.directory / "acl", acl.encode(), mode=0o640)
        write_atomically(self.o.directory / "passwd", passwd.encode(), mode=0o640)
        self._reload()

    def _reload(self) -> None:
        """Make the broker read its files again (the embedded broker watches them itself)."""
        if self.o.reload_pid_file is not None:
            pid = int(self.o.reload_pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
        if self.o.reload_command:
            subprocess.run(shlex.split(self.o.reload_command), check=True, timeout=30)

    # -- running ---------------------------------------------------------------------------
    def _info(self, state: str) -> bytes:
        return RegistrarInfo(site=self.o.site or "", state=state, join_login=FLEET_JOIN,
                             join_password=self.join_password, trusted=tuple(self.o.trust.keys),
                             ts=round(time.time(), 3)).encode()

    def start(self) -> Registrar:
        t = self.topics
        self.client.start(timeout=30)
        if self.site.ca_pem:
            self.client.publish(t.fleet_ca, self.site.ca_pem.encode(), retain=True)
        for box, record in self._all_records().items():
            self.client.publish(t.fleet_identity(box), record.encode(), retain=True)
        for f in (t.fleet_join_filter, t.fleet_requests, t.presence_filter, t.deploy_reported_filter,
                  t.pipelines_filter, t.bridge_filter, t.actuator_state_filter):
            self.client.subscribe(f)
        self.client.publish(t.fleet_registrar, self._info("online"), retain=True)
        self._thread.start()
        log.info("registrar: serving joins for %s on %s", self.o.site or "any site", self.client.url)
        return self

    def stop(self) -> None:
        self.inbox.put(None)
        self._thread.join(10)
        self.client.publish(self.topics.fleet_registrar, self._info("offline"), retain=True).wait(5)  # type: ignore[union-attr]
        self.client.stop()

    def _all_records(self) -> dict[str, IdentityRecord]:
        """Every identity: those it enrolled or revoked, and the site's other logins (``static``)."""
        passwd, acl_text = self._files()
        acl = parse_acl(acl_text)
        out = {login: IdentityRecord(box_id=login, role=guess_role(acl.blocks.get(login, ()), login), source="static")
               for login in parse_passwd(passwd) if login not in RESERVED}
        out.update(self.records)
        return out

    def _run(self) -> None:
        while True:
            try:
                m = self.inbox.get(timeout=0.5)
            except queue.Empty:
                m = False       # type: ignore[assignment]
            if m is None:
                return
            try:
                if m:
                    self._take(m)
                self._clear_revoked()
            except Exception:          # a bad message or a file error must not end the registrar
                log.exception("registrar: could not handle %s", getattr(m, "topic", "a tick"))

    def _take(self, m: Message) -> None:
        t = self.topics
        nonce = t.nonce_of_join(m.topic)
        if nonce is not None:
            self._join(nonce, m.payload)
        elif m.topic == t.fleet_requests:
            self._request(m.payload)
        else:
            box = self._box_of(m.topic)
            if box is None:
                return
            if box in self.revoked_at and m.payload:
                self.retained[m.topic] = box
            elif m.payload:
                self.docs.setdefault(box, {})[m.topic] = m.payload
                self.docs.move_to_end(box)
                while len(self.docs) > MAX_BOXES:
                    self.docs.popitem(last=False)
            else:
                self.docs.get(box, {}).pop(m.topic, None)

    def _box_of(self, topic: str) -> str | None:
        t = self.topics
        agent = t.agent_of_presence(topic)
        if agent is not None:
            return agent
        rest = topic[len(t.root) + 1:].split("/")
        if rest[0] in ("deploy", "pipelines", "actuators") and len(rest) >= 3:
            return rest[2] if rest[0] == "deploy" else rest[1]
        if rest[0] == "bridge" and len(rest) == 2:
            return f"bridge-{rest[1]}"
        return None

    # -- joining ---------------------------------------------------------------------------
    def _answer(self, nonce: str, payload: bytes) -> None:
        self.client.publish(self.topics.fleet_joined(nonce), payload)

    def _join(self, nonce: str, payload: bytes) -> None:
        try:
            request = JoinRequest.decode(payload)
        except JoinRefused as exc:
            self._answer(nonce, answer_refused(exc.code, str(exc)))
            return
        passwd, acl = self._files()
        taken = set(parse_passwd(passwd)) | set(self.records)
        now = time.time()
        self.spent.prune(now)
        decision = decide_join(request, trust=self.o.trust, site=self.site, spent=self.spent, taken=taken, now=now,
                               password=secrets.token_urlsafe(24), salt=secrets.token_bytes(12))
        if isinstance(decision, Refused):
            log.warning("registrar: join refused (%s): %s", decision.code, decision.message)
            self._answer(nonce, answer_refused(decision.code, decision.message))
        elif isinstance(decision, Again):
            e = decision.entry
            if parse_passwd(passwd).get(e.box_id) != e.login_hash and e.box_id in self.records \
                    and self.records[e.box_id].state == "active":
                self._write_files(with_login(passwd, e.box_id, e.login_hash), acl)
            log.info("registrar: %s asked again with its token: the same answer", e.box_id)
            self._answer(nonce, answer_sealed(base64.b64decode(e.answer)))
        else:
            self._mint(nonce, request, decision, passwd, acl, now)

    def _mint(self, nonce: str, request: JoinRequest, mint: Mint, passwd: str, acl: str, now: float) -> None:
        box = mint.identity.box_id
        sealed = seal(request.box_key, mint.identity.encode())
        # spent first, on disk: whatever happens next, the token does not work for another box
        self.spent.spend(Spent(token_id=mint.token.token_id, expires=mint.token.expires,
                               box_key=key_hash(request.box_key), box_id=box, used=round(now, 3),
                               answer=base64.b64encode(sealed).decode(), login_hash=mint.hashed, role=mint.token.role))
        self.spent_file.save(self.spent)
        self._write_files(with_login(passwd, mint.identity.login, mint.hashed),
                          acl_with_block(acl, mint.identity.login, mint.rules))
        self.records[box] = mint.record
        self._save_records()
        url = replace(BrokerUrl.parse(self.o.broker), username=mint.identity.login,
                      password=mint.identity.password, password_file=None)
        deadline = time.monotonic() + LOGIN_WAIT_S
        while (why := probe_connect(url, timeout=2.0)) is not None and time.monotonic() < deadline:
            time.sleep(0.2)            # the broker re-reads its files: mosquitto at once, the embedded one within 0.5 s
        if why is not None:
            log.error("registrar: the new login %s does not work yet (%s): does the broker re-read %s "
                      "(--reload-pid-file / --reload-command for mosquitto)?", box, why, self.o.directory)
        self.client.publish(self.topics.fleet_identity(box), mint.record.encode(), retain=True)
        self._answer(nonce, answer_sealed(sealed))
        log.info("registrar: %s joined as %s of %s (labels %s, token %s)", box, mint.token.role, mint.token.site,
                 ",".join(mint.token.labels) or "-", mint.token.token_id)

    # -- revoking --------------------------------------------------------------------------
    def _request(self, payload: bytes) -> None:
        try:
            signed = Signed.decode(payload, what="fleet request")
        except DeployRefused as exc:
            log.warning("registrar: a fleet request refused: %s", exc)
            return
        passwd, acl = self._files()
        now = time.time()
        box = decide_revoke(signed, trust=self.o.trust, now=now, records=self._all_records(),
                            logins=set(parse_passwd(passwd)))
        if isinstance(box, Refused):
            log.warning("registrar: a revoke refused (%s): %s", box.code, box.message)
            return
        before = self._all_records().get(box) or IdentityRecord(box_id=box, role="?", source="static")
        if box in parse_passwd(passwd) or f"user {box}" in acl:
            # A broker told to re-read its files (mosquitto) drops the box's tasks routed to its kept session
            # from then on: the registrar takes that session over first (enrollment/handover.py). The
            # embedded broker re-reads them itself and keeps what it routes to a dropped session.
            reloaded = self.o.reload_pid_file is not None or bool(self.o.reload_command)
            handover = Handover(self.o.broker, box, self.topics) if before.role == "agent" and reloaded else None
            if handover is not None:
                handover.take()
            self._write_files(without_login(passwd, box), acl_without_login(acl, box))
            if handover is not None:
                handover.finish()
        record = replace(before, state="revoked", revoked=round(now, 3))
        self.records[box] = record
        self._save_records()
        self.revoked_at[box] = time.monotonic()
        self.client.publish(self.topics.fleet_identity(box), record.encode(), retain=True)
        self._offline_for(box)
        log.warning("registrar: %s revoked: its login is gone and its connections dropped", box)

    def _offline_for(self, box: str) -> None:
        """A revoked agent's last will, said on its behalf: mosquitto sends no will for a client it drops
        at a reload, so its peers would wait for its presence to go stale before taking over its tasks."""
        docs = self.docs.pop(box, {})
        for topic in docs:
            self.retained[topic] = box
        presence = docs.get(self.topics.presence(box)) if box and "/" not in box else None
        if presence:
            try:
                doc = codec.decode(presence)
            except (ValueError, TypeError):
                return
            if isinstance(doc, dict) and doc.get("state") != "offline":
                doc.update(state="offline", ts=round(time.time(), 3))
                self.client.publish(self.topics.presence(box), codec.encode(doc), retain=True)

    def _clear_revoked(self) -> None:
        """A revoked box's retained documents (its last will among them) cleared once its peers have
        had :data:`CLEAR_AFTER_S` to take over what it held."""
        now = time.monotonic()
        for topic, box in list(self.retained.items()):
            if now - self.revoked_at.get(box, now) >= self.o.clear_after_s:
                del self.retained[topic]
                self.client.publish(topic, b"", retain=True)
                log.info("registrar: cleared %s (%s is revoked)", topic, box)
