"""``fogmesh bench hostile``: agents under a stream of hostile messages on
every topic of topics.md (:mod:`fogmesh.bench.hostile_stream`), some retained, while
a fire-and-forget device sends valid tasks. What it shows: every process
alive, every valid task answered once, ``fogmesh monitor --once`` working,
every bad message answered (a dead letter or an error reply) or counted as
refused by each agent that got it, and the agents' logs not flooded.

:class:`HostileSite` is the set-up (a mosquitto, agents as ``fogmesh agent``
processes with metrics, a subscriber that counts what answers bad tasks) and
its expectations, worked out from the same decoders the agents use, message
by message as the stream is published; ``tests/test_hostile.py`` runs it with
``tests/fire_and_forget.py``'s device, :func:`run` with the bench's own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fogmesh import codec
from fogmesh.announcements import BridgeHealth, Presence
from fogmesh.bench.faultkit import Agents, FirmwareDevice, ReplyCounter, wait_answering
from fogmesh.bench.hostile_stream import HostileStream
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port
from fogmesh.claims import Claim
from fogmesh.devices.client import FogClient
from fogmesh.errors import InvalidMessage
from fogmesh.mqtt import Message, MqttClient
from fogmesh.offers import decode_inbox
from fogmesh.topics import Topics


@dataclass
class Expected:
    """What the agents must make of the stream so far."""

    answers: int = 0                                               # bad or odd tasks: one reply or dead letter each
    refused: Counter[str] = field(default_factory=Counter)         # agent -> presence, bridge, control refused
    bad_inbox: Counter[str] = field(default_factory=Counter)
    bad_claims: int = 0                                            # each agent


class HostileSite:
    def __init__(self, workdir: Path, *, agents: tuple[str, ...] = ("h1", "h2"), seed: int = 37,
                 device: str = "dev") -> None:
        self.workdir, self.ids, self.device = workdir, agents, device
        self.root = f"hostile/{uuid.uuid4().hex[:6]}"
        self.topics = Topics(self.root)
        self.broker = Mosquitto(workdir=workdir / "mosquitto").start()
        self.url = self.broker.url
        self.agents = Agents(workdir)
        self.ports = {a: free_port() for a in agents}
        for a in agents:
            self.agents.start(a, self.url, self.root, "--metrics-port", str(self.ports[a]), "--concurrency", "2")
        self.stream = HostileStream(self.root, seed=seed, targets=agents)
        self.expected = Expected()
        self._mine: Counter[tuple[str, bytes]] = Counter()        # published by the stream: not an answer
        self.answers = 0
        self._lock = threading.Lock()
        with FogClient(self.url, root=self.root) as client:
            wait_answering(client, list(agents), timeout=60)
        self.watcher = MqttClient(self.url, on_message=self._seen)     # after those answers: only the stream's
        self.watcher.start(timeout=10)
        self.watcher.subscribe("#", 1)
        self.hostile = MqttClient(self.url)
        self.hostile.start(timeout=10)

    # -- what answers the bad tasks -------------------------------------------------------
    def _seen(self, m: Message) -> None:
        with self._lock:
            if self._mine[(m.topic, m.payload)] > 0:
                self._mine[(m.topic, m.payload)] -= 1
                return
        try:
            doc = codec.decode(m.payload)
        except InvalidMessage:
            return
        if not isinstance(doc, dict) or m.topic == self.topics.replies(self.device):
            return
        dead_letter = m.topic == self.topics.errors and doc.get("agent") in self.ids
        reply = doc.get("worker") in self.ids and doc.get("status") in ("ok", "error")
        if dead_letter or reply:
            with self._lock:
                self.answers += 1

    # -- the stream, and what it must cause ---------------------------------------------------
    def flood(self, seconds: float, *, rate: float = 60.0) -> int:
        """Publish the stream at ``rate`` messages/s for ``seconds``; returns how many."""
        started, sent = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            topic, payload, retain = next(self.stream)
            self._expect(topic, payload)
            with self._lock:
                self._mine[(topic, payload)] += 1
            self.hostile.publish(topic, payload, qos=1, retain=retain)
            sent += 1
            time.sleep(max(0.0, started + sent / rate - time.monotonic()))   # the stream's pace, not a wait
        return sent

    def _expect(self, topic: str, payload: bytes) -> None:
        t, e = self.topics, self.expected
        if t.is_task_topic(topic) or topic in (t.agent_tasks(a) for a in self.ids):
            e.answers += 1
            return
        agent = t.agent_of_presence(topic)
        if agent is not None and payload:
            if not _decodes(lambda: Presence.decode(payload, agent=agent)):
                for a in self.ids:
                    e.refused[a] += 1
        elif topic.startswith(t.bridge_prefix) and "/" not in topic[len(t.bridge_prefix):] and payload:
            site = topic[len(t.bridge_prefix):]
            if not _decodes(lambda: BridgeHealth.decode(payload, site=site)):
                for a in self.ids:
                    e.refused[a] += 1
        elif topic == t.claims and not _decodes(lambda: Claim.decode(payload)):
            e.bad_claims += 1
        for a in self.ids:
            if topic == t.agent_control(a) and payload.replace(b" ", b"") != b'{"op":"drain"}':
                e.refused[a] += 1
            elif topic == t.agent_inbox(a) and b'"op":"order-view"' not in payload \
                    and not _decodes(lambda: decode_inbox(payload)):
                e.bad_inbox[a] += 1

    # -- what the agents say -------------------------------------------------------------------
    def metrics(self, agent: str) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.ports[agent]}/metrics", timeout=10).read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^fogmesh_agent_(\w+)_total\{[^}]*\} (\S+)$",
                                                                  text, re.M)}

    def counted(self) -> dict[str, Any]:
        """What was counted against what was expected, per agent and in all."""
        e = self.expected
        got = {a: self.metrics(a) for a in self.ids}
        with self._lock:
            answers = self.answers
        return {"answers": (answers, e.answers),
                **{f"{a} refused": (int(got[a].get("refused", -1)), e.refused[a]) for a in self.ids},
                **{f"{a} bad_inbox": (int(got[a].get("bad_inbox", -1)), e.bad_inbox[a]) for a in self.ids},
                **{f"{a} bad_claims": (int(got[a].get("bad_claims", -1)), e.bad_claims) for a in self.ids}}

    def settled(self, timeout: float = 60.0) -> dict[str, Any]:
        """:meth:`counted` once every count meets its expectation (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counted()
            if all(got == want for got, want in counts.values()) or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)                   # counts still coming in: polled, nothing to await

    def alive(self) -> dict[str, bool]:
        return {a: self.agents.procs[a].poll() is None for a in self.ids}

    def refusal_lines(self, agent: str) -> list[str]:
        return [line for line in self.agents.log(agent).splitlines() if "refused" in line]

    def log_lines(self, agent: str) -> int:
        return len(self.agents.log(agent).splitlines())

    def monitor(self) -> tuple[int, dict[str, Any], str]:
        """``fogmesh monitor --once --json``: its exit status, rows and stderr."""
        out = subprocess.run([sys.executable, "-m", "fogmesh", "monitor", "--broker", self.url, "--root", self.root,
                              "--once", "--json", "--wait", "1.5"], capture_output=True, text=True, timeout=60)
        try:
            rows = json.loads(out.stdout)
        except ValueError:
            rows = {}
        return out.returncode, rows, out.stderr

    def close(self) -> None:
        self.hostile.stop()
        self.watcher.stop()
        self.agents.close()
        self.broker.cleanup()


def _decodes(decode: Any) -> bool:
    try:
        decode()
    except InvalidMessage:
        return False
    return True


# -- fogmesh bench hostile --------------------------------------------------------------------------
def run(args: Any) -> dict[str, Any]:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fogmesh-hostile-") as tmp:
        site = HostileSite(Path(tmp), seed=args.seed)
        try:
            counter = ReplyCounter(site.broker.host, site.broker.port, site.root)
            device = FirmwareDevice(site.broker.host, site.broker.port, site.root, device=site.device)
            ids = [f"t{i:06d}" for i in range(int(args.seconds * args.task_rate))]

            def send() -> None:
                started = time.monotonic()
                for i, task_id in enumerate(ids):
                    device.send(task_id, "sleep", {"ms": 20}, weight="medium")
                    time.sleep(max(0.0, started + (i + 1) / args.task_rate - time.monotonic()))
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            hostile = site.flood(args.seconds, rate=args.rate)
            sender.join()
            monitor_rc, rows, _ = site.monitor()
            counts = site.settled()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and sum(1 for t in ids if counter.replies.get(t)) < len(ids):
                time.sleep(0.2)                     # replies still on their way
            answered = sum(1 for t in ids if counter.replies.get(t))
            twice = sum(1 for t in ids if len(counter.replies.get(t, ())) > 1)
            return {"seconds": args.seconds, "hostile_sent": hostile, "by_kind": dict(site.stream.by_kind),
                    "tasks": len(ids), "answered": answered, "answered_twice": twice, "alive": site.alive(),
                    "monitor_exit": monitor_rc, "monitor_agents": sorted(a["agent"] for a in rows.get("agents", [])),
                    "counts": {k: list(v) for k, v in counts.items()},
                    "refusal_log_lines": {a: len(site.refusal_lines(a)) for a in site.ids},
                    "log_lines": {a: site.log_lines(a) for a in site.ids}}
        finally:
            site.close()


def render(r: dict[str, Any]) -> str:
    lines = [f"fogmesh bench hostile: {r['hostile_sent']} hostile messages in {r['seconds']:g} s on every topic, "
             f"{r['tasks']} valid tasks from a fire-and-forget device",
             f"  valid tasks answered: {r['answered']} of {r['tasks']} ({r['answered_twice']} twice)",
             f"  agents alive: {', '.join(f'{a} {ok}' for a, ok in r['alive'].items())}; "
             f"fogmesh monitor --once: exit {r['monitor_exit']}, rows {', '.join(r['monitor_agents'])}",
             "  counted / expected:"]
    lines += [f"    {name:<16} {got:>7} / {want}" for name, (got, want) in r["counts"].items()]
    logs = ", ".join(f"{a} {n} ({r['refusal_log_lines'][a]})" for a, n in r["log_lines"].items())
    lines.append(f"  log lines (of them refusal lines): {logs}")
    return "\n".join(lines)
