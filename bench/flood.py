"""``fogmesh bench flood``: an agent's memory under a flood, whatever the
device's reading speed.

One agent started as README says (``fogmesh agent --id X --broker URL``) on a
fresh broker (mosquitto, the embedded one); a device process publishes ``N`` echo tasks at QoS 1 as fast
as the broker takes them, and its replies are read fast (as they come),
slowly (1,000 a second) or not at all (subscribed, then never read: the
broker queues them). The agent's RSS is sampled every 0.1 s; the row shows
it at rest, its peak, and the growth, for N = 20,000 and 200,000: flat
means bounded by configuration (the dedup window, ``--max-unconfirmed``, the
broker's in-flight window), not by the flood's size. Debian 12's mosquitto
(2.0.11) loses its in-flight window once it has queued messages for a client
(eclipse/mosquitto#2306, fixed in 2.0.13) and sends the agent its whole
backlog: on it the agent's memory follows the backlog, and the table says so.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from fogmesh.bench import targets_line
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.mqtt_framing import split_packets

READERS = ("fast", "slow", "none")
SLOW_PER_S = 1000.0

# The device: a separate process, so the sampler and the reader never slow it.
PUBLISHER = r"""
import sys, time, orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
host, port, root, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-pub-{time.time_ns()}")
c.max_inflight_messages_set(100)
c.connect(host, port)
c.loop_start()
infos = []
for i in range(n):
    body = orjson.dumps({"id": f"f-{i}", "kind": "echo", "args": {"n": i, "pad": "x" * 200},
                         "reply_to": f"{root}/replies/flood"})
    infos.append(c.publish(f"{root}/tasks", body, qos=1))
    if len(infos) >= 1000:
        infos.pop(0).wait_for_publish(60)
for info in infos:
    info.wait_for_publish(60)
print("published", flush=True)
c.loop_stop()
c.disconnect()
"""


@dataclass
class FloodRow:
    broker: str
    tasks: int
    reader: str
    seconds: float
    answered: int | None          # replies read (None: the reader reads nothing)
    done: int                     # tasks the agent answered, from its presence
    rest_mb: float
    peak_mb: float
    growth_mb: float
    broker_peak_mb: float


def progress(msg: str) -> None:
    print(f"[bench flood] {msg}", file=sys.stderr, flush=True)


class Reader:
    """The device's reply subscription, read fast, slowly, or never."""

    def __init__(self, host: str, port: int, root: str, mode: str) -> None:
        self.mode = mode
        self.count = 0
        self._stop = threading.Event()
        self._sock = socket.create_connection((host, port))
        client_id = f"flood-rd-{uuid.uuid4().hex[:6]}".encode()
        # Keep-alive 0: a reader that never reads never sends PINGREQ either, and must not be cut off.
        connect = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
        self._sock.sendall(b"\x10" + _length(len(connect)) + connect)
        topic = f"{root}/replies/flood".encode()
        sub = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x00"     # QoS 0: nothing to acknowledge
        self._sock.sendall(b"\x82" + _length(len(sub)) + sub)
        self._thread = threading.Thread(target=self._read, daemon=True)
        if mode != "none":
            self._thread.start()

    def _read(self) -> None:
        buffer = bytearray()
        pace = 1.0 / SLOW_PER_S if self.mode == "slow" else 0.0
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096 if pace else 65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            self.count += sum(1 for packet in split_packets(buffer) if packet[0] & 0xF0 == 0x30)
            if pace:
                ahead = started + self.count * pace - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def presence_done(host: str, port: int, topic: str) -> int:
    """The ``done`` count of an agent's retained presence."""
    import orjson
    got: list[bytes] = []
    seen = threading.Event()
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, 1)
    c.on_message = lambda cl, u, m: (got.append(bytes(m.payload)), seen.set())
    c.connect(host, port)
    c.loop_start()
    seen.wait(3)
    c.loop_stop()
    c.disconnect()
    return int(orjson.loads(got[-1]).get("done", 0)) if got else 0


class _Embedded:
    """The embedded broker as its own process (as ``fogmesh broker`` runs)."""

    def __init__(self) -> None:
        from fogmesh.broker.ports import free_port, wait_port
        self.host, self.port = "127.0.0.1", free_port()
        # Nothing kept, as the flood's mosquitto (persistence off): memory and time are the agent's.
        self.proc = subprocess.Popen([sys.executable, "-m", "fogmesh", "broker", "--port", str(self.port),
                                      "--no-persistence", "--log-level", "WARNING"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.host, self.port, 20):
            raise RuntimeError("the embedded broker did not start")
        self.url = f"mqtt://{self.host}:{self.port}"

    def cleanup(self) -> None:
        stop_processes([self.proc])


def one(tasks: int, mode: str, broker_name: str, *, timeout_s: float) -> FloodRow:
    workdir = tempfile.mkdtemp(prefix="fogmesh-flood-")
    broker: Any = Mosquitto(persistence=False).start() if broker_name == "mosquitto" else _Embedded()
    root = f"flood/{uuid.uuid4().hex[:8]}"
    agent_id = f"flood-{uuid.uuid4().hex[:4]}"
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", agent_id, "--broker", broker.url,
                              "--root", root, "--log-level", "WARNING"],
                             env={**os.environ, "FOGMESH_STATE_DIR": workdir}, cwd=tempfile.gettempdir())
    procs: list[Any] = [agent]
    reader = None
    try:
        from fogmesh.bench.faultkit import wait_answering
        from fogmesh.devices.client import FogClient
        with FogClient(broker.url, root=root) as client:
            wait_answering(client, [agent_id])
            for _ in range(200):
                client.submit("echo", {"warm": 1}, timeout=10)
        presence = f"{root}/presence/{agent_id}"
        base = 0
        deadline = time.monotonic() + 15
        while base < 200 and time.monotonic() < deadline:     # presence says done once per period
            base = presence_done(broker.host, broker.port, presence)
            time.sleep(0.5)
        me = psutil.Process(agent.pid)
        mosq = psutil.Process(broker.proc.pid) if broker.proc else None
        time.sleep(1.0)
        rest = me.memory_info().rss
        peak, broker_peak = [rest], [mosq.memory_info().rss if mosq else 0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                try:
                    peak[0] = max(peak[0], me.memory_info().rss)
                    if mosq:
                        broker_peak[0] = max(broker_peak[0], mosq.memory_info().rss)
                except psutil.Error:
                    return
        threading.Thread(target=sample, daemon=True).start()
        reader = Reader(broker.host, broker.port, root, mode)
        started = time.monotonic()
        pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, broker.host, str(broker.port), root, str(tasks)],
                               stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
        procs.append(pub)
        done = 0
        while time.monotonic() - started < timeout_s:
            done = presence_done(broker.host, broker.port, presence) - base
            if done >= tasks:
                break
            time.sleep(1.0)
        seconds = time.monotonic() - started
        if mode != "none":
            deadline = time.monotonic() + timeout_s
            while reader.count < tasks and time.monotonic() < deadline:
                time.sleep(0.2)
        stop.set()
        row = FloodRow(broker=broker_name, tasks=tasks, reader=mode, seconds=round(seconds, 1),
                       answered=reader.count if mode != "none" else None, done=done,
                       rest_mb=round(rest / 2**20, 1), peak_mb=round(peak[0] / 2**20, 1),
                       growth_mb=round((peak[0] - rest) / 2**20, 1), broker_peak_mb=round(broker_peak[0] / 2**20, 1))
        progress(f"{broker_name}, {tasks} tasks, reader {mode}: {row}")
        return row
    finally:
        if reader is not None:
            reader.close()
        stop_processes(procs)
        broker.cleanup()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.tasks.split(",")]
    modes = [m.strip() for m in args.readers.split(",") if m.strip()]
    unknown = set(modes) - set(READERS)
    if unknown:
        raise SystemExit(f"unknown reader(s) {', '.join(sorted(unknown))}: use {', '.join(READERS)}")
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    rows = [one(n, mode, b, timeout_s=args.timeout) for b in brokers for mode in modes for n in sizes]
    targets: dict[str, bool] = {}
    for b in brokers:
        for mode in modes:
            mine = sorted((r for r in rows if r.reader == mode and r.broker == b), key=lambda r: r.tasks)
            if len(mine) >= 2:
                targets[f"agent_memory_flat_from_{mine[0].tasks}_to_{mine[-1].tasks}_reader_{mode}_on_{b}"] = \
                    mine[-1].growth_mb <= mine[0].growth_mb + args.flat_mb
            targets[f"every_task_answered_reader_{mode}_on_{b}"] = all(r.done >= r.tasks for r in mine)
    return {"config": {"tasks": sizes, "readers": modes, "brokers": brokers, "slow_per_s": SLOW_PER_S,
                       "flat_mb": args.flat_mb},
            "rows": [asdict(r) for r in rows], "targets": targets}


def render(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [f"fogmesh bench flood: one agent (default flags) on each broker; a device publishes N echo tasks at "
             f"QoS 1 as fast as the broker takes them; its replies read as they come (fast), "
             f"{c['slow_per_s']:.0f}/s (slow) or never (none); agent RSS sampled every 0.1 s", "",
             f"{'broker':<10} {'tasks':>8} {'reader':<6} {'seconds':>8} {'answered':>9} {'read':>9} "
             f"{'agent MB at rest':>17} {'peak':>7} {'growth':>7} {'broker peak MB':>15}", "-" * 107]
    for r in report["rows"]:
        read = "-" if r["answered"] is None else str(r["answered"])
        lines.append(f"{r['broker']:<10} {r['tasks']:>8} {r['reader']:<6} {r['seconds']:>8.1f} {r['done']:>9} "
                     f"{read:>9} "
                     f"{r['rest_mb']:>17.1f} {r['peak_mb']:>7.1f} {r['growth_mb']:>7.1f} {r['broker_peak_mb']:>15.1f}")
    lines += ["", f"flat: the growth at the largest N within {c['flat_mb']:g} MB of the smallest's",
              targets_line(report["targets"])]
    return "\n".join(lines)
