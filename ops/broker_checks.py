"""``fogmesh doctor``'s questions to the broker, in the order a deployment
breaks: can this box reach it, does TLS verify, is the login accepted, what
does the broker offer (MQTT 5, WebSockets, shared subscriptions), does the
ACL let this login publish and read its own topics, and is this box's clock
close to its peers'. Each answers with a :class:`~fogmesh.ops.report.Check`."""

from __future__ import annotations

import math
import queue
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, replace
from typing import Iterator

from fogmesh import codec
from fogmesh.errors import ConnectError
from fogmesh.mqtt import BrokerUrl, Message, MqttClient, probe_connect, topic_round_trip
from fogmesh.ops.failover import NodeAnswer, first_up, node_checks
from fogmesh.ops.report import Check
from fogmesh.topics import Topics

ROLES = ("agent", "bridge", "device", "operator")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CLOCK_WARN_S = 2.0
CERT_WARN_DAYS = 30


SYS_VERSION = "$SYS/broker/version"
START_BROKER = ("start the broker (`fogmesh broker`, `sudo systemctl start mosquitto` or "
                "`sudo systemctl start rabbitmq-server` on that node) or correct the port in --broker")


@dataclass(frozen=True)
class BrokerTarget:
    """Whom the doctor asks, and as what: ``role`` and ``ident`` (agent id,
    bridge site, device id, operator login) name this login's own topics."""

    url: BrokerUrl
    topics: Topics
    role: str = "agent"
    ident: str = "doctor"
    timeout: float = 5.0

    @property
    def login(self) -> str:
        return self.url.username or self.ident

    def own_topic(self) -> str:
        """A topic inside this login's permissions that nothing else reads:
        the probe lands there and nowhere else."""
        if self.role == "agent":
            return self.topics.agent_topic(self.ident, "doctor")
        if self.role == "bridge":
            return self.topics.agent_topic(f"bridge-{self.ident}", "doctor")
        return self.topics.login_probe(self.login, "doctor")

    def probe_topic(self, token: str) -> str:
        """``{root}/probe/...``: agents may use all of probe/, other logins their own part."""
        if self.role == "agent":
            return self.topics.probe(token)
        return self.topics.login_probe(self.login, token)


def reach_node(host: str, port: int, *, timeout: float) -> NodeAnswer:
    """Does ``host:port`` take a TCP connection? Why not, in words, with what to do."""
    where = f"{host}:{port}"
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        return NodeAnswer(where, False, f"cannot resolve {host}: {exc.strerror}",
                          "check the host name in --broker (and /etc/hosts or DNS)")
    except (TimeoutError, socket.timeout):
        return NodeAnswer(where, False, f"no answer within {timeout:g} s",
                          "is the host up, and does a firewall let the port through?")
    except ConnectionRefusedError:
        return NodeAnswer(where, False, "connection refused (nothing listens on the port)",
                          START_BROKER)
    except OSError as exc:
        return NodeAnswer(where, False, f"cannot reach it: {exc.strerror or exc}", START_BROKER)
    ms = 1000 * (time.monotonic() - started)
    return NodeAnswer(where, True, f"accepts TCP connections ({ms:.1f} ms)")


def check_reach(target: BrokerTarget) -> tuple[list[Check], BrokerUrl | None]:
    """Each node of ``--broker`` (one, or a cluster's failover list), and the URL
    the later checks use: the list from its first node that answers (None: none does)."""
    url = target.url
    answers = [reach_node(host, port, timeout=target.timeout) for host, port in url.nodes]
    checks = node_checks("broker", answers, label="mqtt node")
    i = first_up(answers)
    if i is None:
        return checks, None
    host, port = url.nodes[i]
    return checks, replace(url, host=host, port=port, alternates=url.nodes[i + 1:] + url.nodes[:i])


def check_tls(target: BrokerTarget) -> Check:
    url = target.url
    if not url.tls:
        if url.host in LOOPBACK:
            return Check("tls", "info", "plain MQTT on loopback (nothing leaves this box)")
        return Check("tls", "warn", "plain MQTT over the network: anyone on it can read and inject tasks",
                     "use a broker with TLS and logins: python -m fogmesh.broker.secure, then mqtts:// URLs")
    try:
        ctx = ssl.create_default_context(cafile=url.ca_file)
    except (OSError, ssl.SSLError) as exc:
        return Check("tls", "fail", f"cannot read the CA certificate {url.ca_file}: {exc}",
                     "point ?ca= in the broker URL at the CA file (ca.crt from python -m fogmesh.broker.secure)")
    try:
        with socket.create_connection((url.host, url.port), timeout=target.timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=url.host) as tls:
            cert = tls.getpeercert() or {}
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        if "mismatch" in reason or "hostname" in reason:
            fix = (f"connect by a name or address the broker's certificate was made for "
                   f"(python -m fogmesh.broker.secure --host NAME); {url.host} is not one of them")
        elif "expired" in reason:
            fix = "renew the broker's certificate (python -m fogmesh.broker.secure writes new ones) and restart it"
        else:
            fix = ("trust the CA that signed the broker's certificate: ?ca=/etc/fogmesh/ca.crt in the "
                   "broker URL")
        return Check("tls", "fail", f"the broker's certificate does not verify: {reason}", fix)
    except ssl.SSLError as exc:
        return Check("tls", "fail", f"TLS handshake failed: {exc.reason or exc}",
                     "is this port a TLS listener? mqtts:// needs one (usually 8883); mqtt:// for plain")
    except OSError as exc:
        return Check("tls", "fail", f"TLS connection failed: {exc}", "see the broker check above")
    subject = dict(x[0] for x in cert.get("subject", ()))
    issuer = dict(x[0] for x in cert.get("issuer", ()))
    days = (ssl.cert_time_to_seconds(cert["notAfter"]) - time.time()) / 86400
    what = f"{subject.get('commonName', '?')}, issued by {issuer.get('commonName', '?')}"
    if days < CERT_WARN_DAYS:
        return Check("tls", "warn", f"verified ({version}, {what}) but expires in {days:.0f} days "
                     f"({cert['notAfter']})",
                     "renew the broker's certificate before then (python -m fogmesh.broker.secure writes new ones)")
    return Check("tls", "ok", f"verified ({version}, {what}), valid {days:.0f} more days")


class Session:
    """The doctor's own connection, with every message it receives queued."""

    def __init__(self, target: BrokerTarget) -> None:
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.client = MqttClient(target.url, client_id=f"fogmesh-doctor-{uuid.uuid4().hex[:8]}",
                                 on_message=self.inbox.put, reconnect=False)

    def received(self, wait_s: float) -> Iterator[Message]:
        """The messages that arrive within ``wait_s`` from now, as they come."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                yield self.inbox.get(timeout=left)
            except queue.Empty:
                return

    def close(self) -> None:
        self.client.stop()


def check_login(target: BrokerTarget) -> tuple[Check, Session | None]:
    session = Session(target)
    try:
        session.client.start(timeout=target.timeout)
    except ConnectError as exc:
        text = str(exc)
        if "authori" in text.lower() or "password" in text.lower() or "bad user" in text.lower():
            fix = ("check the login in the URL (mqtts://LOGIN@host) and its password: "
                   "$FOGMESH_PASSWORD_FILE, ?password_file=PATH or $FOGMESH_PASSWORD")
        else:
            fix = "see the broker and tls checks above"
        return Check("login", "fail", f"the broker refused the connection: {text.split('. ')[0]}", fix), None
    who = f"as {target.url.username}" if target.url.username else "anonymously"
    return Check("login", "ok", f"connected {who} (MQTT 3.1.1)"), session


def check_mqtt5(target: BrokerTarget) -> Check:
    problem = probe_connect(target.url, mqtt5=True, timeout=min(target.timeout, 3.0))
    if problem is None:
        return Check("mqtt 5", "info", "offered: agents connect with MQTT 5 (--mqtt auto, the default), so MQTT 5 "
                     "requesters such as mosquitto_rr are answered on their Response Topic")
    return Check("mqtt 5", "info", f"not offered ({problem}): agents connect with MQTT 3.1.1 (--mqtt auto), "
                 "all fogmesh needs")


def check_websockets(target: BrokerTarget, ports: tuple[int, ...]) -> Check:
    """Browser dashboards need MQTT over WebSockets; fogmesh's own parts do not."""
    found = []
    for port in ports:
        try:
            with socket.create_connection((target.url.host, port), timeout=0.5):
                pass
        except OSError:
            continue
        if probe_connect(target.url, websocket_port=port, timeout=min(target.timeout, 2.0)) is None:
            found.append(port)
    if found:
        return Check("websockets", "info", "MQTT over WebSockets on port " + ", ".join(map(str, found)))
    return Check("websockets", "info", f"no MQTT over WebSockets on port {', '.join(map(str, ports))} "
                 "(only browser clients need it)")


def check_acl(target: BrokerTarget) -> Check:
    topic = target.own_topic()
    fix = (f"let {target.login} read and write {topic}: `topic readwrite {topic}` in its ACL block "
           f"(python -m fogmesh.broker.secure writes it), then reload the broker; or check --as/--id")
    try:
        ok = topic_round_trip(target.url, topic, payload=codec.encode({"doctor": uuid.uuid4().hex}),
                              timeout=target.timeout)
    except ConnectError as exc:
        return Check("acl", "fail", f"{target.login} could not connect for the probe: {exc}", fix)
    if not ok:
        return Check("acl", "fail", f"{target.login} cannot publish and read its own topic {topic} "
                     "(the broker refused the subscription or dropped the probe)", fix)
    return Check("acl", "ok", f"{target.login} publishes and reads its own topic {topic}")


def check_shared(target: BrokerTarget, *, amqp: bool = False) -> Check:
    """Shared subscriptions, and so how agents started like this split tasks:
    ``amqp`` (``--amqp`` given): from RabbitMQ's quorum queue, whatever this says."""
    from fogmesh.edge_agent.probes import SharedSubscriptionProbe
    token = f"doctor-shared-{uuid.uuid4().hex[:8]}"
    probe = SharedSubscriptionProbe(target.probe_topic(token), group=token)
    try:
        shared = probe.run(target.url, client_id=f"fogmesh-doctor-{uuid.uuid4().hex[:8]}", mqtt5=False,
                           timeout=target.timeout)
    except ConnectError as exc:
        return Check("shared subs", "skip", f"not checked: {exc}")
    if amqp:
        return Check("shared subs", "info", f"{'$share subscriptions work' if shared else 'no $share subscriptions'}"
                     "; agents started with --amqp use amqp dispatch (tasks from the quorum queue)")
    if shared:
        return Check("shared subs", "ok", "$share subscriptions work: agents split tasks with shared dispatch")
    return Check("shared subs", "info", "no $share subscriptions: agents use claim dispatch "
                 "(see topics.md, Brokers, for what that guarantees on this broker)")


def check_clock(target: BrokerTarget, session: Session, *, wait_s: float) -> Check:
    """Presence and bridge health carry their sender's Unix time; a live one
    (not a retained copy) tells how far this clock is from that peer's."""
    for f in (target.topics.presence_filter, target.topics.bridge_filter):
        try:
            session.client.subscribe(f, 0, timeout=target.timeout)
        except ConnectError:
            pass
    for m in session.received(wait_s):
        if m.retain or not m.payload:
            continue
        peer = m.topic.rsplit("/", 1)[-1]      # who: the topic (the ACL binds it), never the payload
        try:
            body = codec.decode(m.payload)
            ts = float(body["ts"])
        except Exception:
            continue
        if not math.isfinite(ts) or body.get("state") == "offline":
            continue
        offset = time.time() - ts
        ahead = "ahead of" if offset > 0 else "behind"
        if abs(offset) > CLOCK_WARN_S:
            return Check("clock", "warn", f"this clock is {abs(offset):.1f} s {ahead} {peer}'s",
                         "turn on time sync on every box (sudo timedatectl set-ntp true); deadlines "
                         "(deadline_ms) and presence staleness assume clocks within a second or two")
        return Check("clock", "ok", f"within {abs(offset):.2f} s of {peer}'s")
    return Check("clock", "info", f"no peer announced itself within {wait_s:g} s: nothing to compare with")


def broker_version(target: BrokerTarget, session: Session, *, wait_s: float = 1.0) -> str | None:
    """The broker's ``$SYS/broker/version`` (mosquitto and the embedded broker
    retain it); None when the login may not read it or the broker has none."""
    try:
        session.client.subscribe(SYS_VERSION, 0, timeout=target.timeout)
    except ConnectError:
        return None
    for m in session.received(wait_s):
        if m.topic == SYS_VERSION and m.payload:
            return m.payload.decode(errors="replace").strip()
    return None


def restart_losses(version: str | None, *, role: str) -> Check:
    """What a restart of this broker drops for a device that publishes each
    task once and never again (topics.md, Guarantees under faults: the
    figures), and whether it pushes an agent its whole backlog. Pure: the
    version string and the role in, the verdict out. A warning for devices
    (theirs are the tasks lost), a fact for every other role: an agent on
    mosquitto before 2.0.13 holds a backlog the broker pushes, which costs
    more memory than elsewhere only by the hundred thousand (README, flood)."""
    resend = ("have devices re-send a task that got no answer, with \"attempt\" 2, 3, ... "
              "(FogClient does; topics.md, Resubmitting a task)")
    status = "warn" if role == "device" else "info"
    unsaved = ("and had not yet passed on (tasks no agent had received, replies not yet delivered to their "
               "device): a device that sends each task once loses those")
    if version is None:
        return Check("restarts", "info", "broker unknown ($SYS/broker/version not readable): see topics.md, "
                     "Guarantees under faults, for what a restart drops")
    if version.startswith("mosquitto"):
        detail = (f"{version}: after a restart it has no $share subscriptions until agents renew theirs "
                  "(within about 0.5 s), and a killed mosquitto (SIGKILL, a power cut) loses what it took "
                  f"since its last autosave (autosave_interval, 30 s as shipped) {unsaved}")
        number = version.split()[-1]
        try:
            old = tuple(int(x) for x in number.split(".")[:3]) < (2, 0, 13)
        except ValueError:
            old = False
        if old:
            detail += (f"; mosquitto {number} also loses its in-flight window under a backlog "
                       "(eclipse/mosquitto#2306, fixed in 2.0.13): agents then hold the backlog in memory "
                       "(`fogmesh bench flood`: +19 MB at 20,000 tasks, as on other brokers; +79 to +90 MB at "
                       "200,000)")
        return Check("restarts", status, detail, resend if status == "warn" else "")
    if version.startswith("fogmesh embedded"):
        return Check("restarts", status, f"{version}: with its state file (the default) it keeps sessions, $share "
                     "subscriptions and queued tasks across a restart, and a killed one loses what it took since "
                     f"its last save (--autosave, 5 s by default) {unsaved}; started with --no-persistence it "
                     "keeps nothing (tasks published before agents subscribe again, replies to devices not yet "
                     "back)", resend if status == "warn" else "")
    return Check("restarts", "info", f"{version}: see topics.md, Guarantees under faults, for what a restart drops")


def check_amqp(urls: tuple[str, ...], *, root: str, timeout: float) -> list[Check]:
    """``amqp`` dispatch (RabbitMQ): can each node given with ``--amqp`` hold the
    task queue? What agents started with these URLs will do: a line per node,
    and the verdict (they move to the next node when theirs goes)."""
    from fogmesh.amqp_queue import probe_queue, queue_name
    if not urls:
        return [Check("amqp queue", "skip", "no --amqp given (RabbitMQ: agents take tasks from a quorum queue "
                      "with --amqp; without it they fall back to claims)")]
    answers = []
    for url in urls:
        where = url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]     # not the password
        try:
            waiting, consumers = probe_queue(url, root=root, timeout=timeout)
        except ConnectError as exc:
            answers.append(NodeAnswer(where, False, str(exc), amqp_fix(str(exc))))
        else:
            answers.append(NodeAnswer(where, True, f"{waiting} waiting, {consumers} consumer(s)"))
    return node_checks("amqp queue", answers, label="amqp node",
                       prefix=f"dispatch amqp: quorum queue {queue_name(root)}: ")


def amqp_fix(reason: str) -> str:
    """What to do about an AMQP node, by why it did not answer (amqp_queue.amqp_reason's words)."""
    if reason.startswith(("connection refused", "no answer", "the port took the connection")):
        return ("start RabbitMQ on that node (`sudo systemctl start rabbitmq-server`; a node still starting "
                "answers within a minute) or correct the host and port of its --amqp URL")
    if reason.startswith(("login refused", "virtual host refused")):
        return ("give --amqp the login agents use (amqp://USER:PASS@HOST:5672/VHOST; `rabbitmqctl list_users` "
                "and `rabbitmqctl list_permissions` on a node show what exists)")
    if reason.startswith("the task queue"):
        return ("let that login configure, write and read the task queue and amq.topic "
                "(`rabbitmqctl set_permissions`), or delete a queue of that name made with other arguments")
    return "correct that --amqp URL (amqp://USER:PASS@HOST:5672/)"
