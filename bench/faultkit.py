"""The parts the fault suite (:mod:`fogmesh.bench.faults`) is built from, as an operator
would use them: brokers as processes that can be killed and restarted on the
same port, agents started through the ``fogmesh`` CLI in their own processes,
and a plain paho subscriber that counts every reply on the wire."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fogmesh.broker.aedes import Aedes
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port, wait_port
from fogmesh.broker.processes import stop_processes
from fogmesh.broker.rabbitmq import RabbitMQ


@dataclass
class FaultRun:
    """One row of the fault table. ``run_twice``: ids answered with two
    different replies (a second run somewhere); ``duplicate_replies``: replies
    beyond one per time the task was submitted (a re-submitted id is
    answered again, with the same bytes; that is not a duplicate)."""

    fault: str
    broker: str
    submitted: int = 0
    answered: int = 0
    lost: int = 0
    run_twice: int = 0
    duplicate_replies: int = 0
    recover_s: float | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    died: list[str] = field(default_factory=list)     # processes that ended on their own (nothing dies)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.run_twice == 0 and self.duplicate_replies == 0 and not self.died


def progress(msg: str) -> None:
    print(f"[bench faults] {msg}", file=sys.stderr, flush=True)


# -- brokers -------------------------------------------------------------------------
AUTOSAVE_S = 1       # the embedded broker writes its state as often as the tests' mosquitto (autosave_interval 1)


class BrokerProcess:
    """A broker that can be stopped (SIGTERM), killed (SIGKILL) and started
    again on the same port, with its state on disk (mosquitto: its
    persistence file, written every second; the embedded broker: its state
    file, as often)."""

    def __init__(self, name: str, workdir: Path, *, autosave_s: int | None = None) -> None:
        """``autosave_s``: mosquitto saves its persistence file this often (the
        shipped config: 30 s; default here 1 s), so a SIGKILL loses what came
        since; 0: at every change (``autosave_on_changes``), so it loses nothing
        it took, and what goes missing in a SIGKILL is fogmesh's own loss."""
        self.name = name
        self.workdir = workdir
        self._mosquitto: Mosquitto | None = None
        self._aedes: Aedes | None = None
        self._rabbit: RabbitMQ | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = free_port()
        if name == "mosquitto":
            self._mosquitto = Mosquitto(port=self.port, workdir=workdir / "mosquitto",
                                        extra_conf="" if autosave_s is None else
                                        "autosave_on_changes true\nautosave_interval 1" if autosave_s == 0 else
                                        f"autosave_interval {autosave_s}")
        elif name == "aedes":
            self._aedes = Aedes(port=self.port)
        elif name == "rabbitmq":
            self._rabbit = RabbitMQ(workdir=workdir / "rabbitmq")
            self.port = self._rabbit.port
        elif name not in ("amqtt", "amqtt-volatile"):
            raise ValueError(f"unknown broker {name!r}: mosquitto, amqtt, amqtt-volatile (the embedded "
                             "broker with --no-persistence), aedes or rabbitmq")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def state_file(self) -> Path | None:
        """Where it keeps its state (mosquitto and the embedded broker)."""
        if self._mosquitto is not None:
            return self._mosquitto.datadir / "mosquitto.db"
        if self.name == "amqtt":
            from fogmesh.broker.embedded import state_path
            return state_path(self.workdir / "amqtt", self.port)
        return None

    def start(self) -> BrokerProcess:
        if self._mosquitto is not None:
            self._mosquitto.start()
            return self
        if self._aedes is not None:
            self._aedes.start()
            return self
        if self._rabbit is not None:
            self._rabbit.start()
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "amqtt.log", "ab") as log:       # as mosquitto's log: kept with the run
            keeps = ["--persistence", str(self.workdir / "amqtt"), "--autosave", str(AUTOSAVE_S)] \
                if self.name == "amqtt" else ["--no-persistence"]
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "fogmesh", "broker", "--port", str(self.port), *keeps,
                 "--log-level", os.environ.get("FOGMESH_BENCH_BROKER_LOG_LEVEL", "WARNING")],
                stdout=subprocess.DEVNULL, stderr=log)
        if not wait_port(self.host, self.port, 20):
            self.kill()
            raise RuntimeError("the embedded broker did not start")
        return self

    def stop(self) -> None:
        if self._mosquitto is not None:
            self._mosquitto.stop()
        elif self._aedes is not None:
            self._aedes.stop()
        elif self._rabbit is not None:
            self._rabbit.stop()
        elif self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)

    def kill(self) -> None:
        if self._mosquitto is not None:
            self._mosquitto.kill()
        elif self._aedes is not None:
            self._aedes.kill()
        elif self._rabbit is not None:
            self._rabbit.kill()
        elif self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self) -> None:
        if self._mosquitto is not None:
            self._mosquitto.cleanup()
        elif self._rabbit is not None:
            self._rabbit.cleanup()
        else:
            self.kill()


# -- agents ----------------------------------------------------------------------------
class Agents:
    """``fogmesh agent`` processes, each with its own state directory and log
    (at INFO; ``FOGMESH_BENCH_LOG_LEVEL=DEBUG`` logs every event and action,
    to follow one task through a failure)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, agent_id: str, url: str, root: str, *extra: str, state_dir: Path | None = None,
              name: str | None = None) -> subprocess.Popen[bytes]:
        name = name or agent_id
        state = state_dir or self.workdir / f"state-{name}"
        state.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fogmesh", "agent", "--id", agent_id, "--broker", url, "--root", root,
                 "--presence-period", "0.5", "--log-level", os.environ.get("FOGMESH_BENCH_LOG_LEVEL", "INFO"),
                 *extra],
                env={**os.environ, "FOGMESH_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.DEVNULL, stderr=out)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def close(self) -> None:
        stop_processes(self.procs.values())


class AgentSilent(TimeoutError):
    """An agent did not answer on its direct topic in time (``agent``: which)."""

    def __init__(self, agent: str, timeout: float) -> None:
        super().__init__(f"agent {agent} did not answer within {timeout:g} s")
        self.agent = agent


def wait_answering(client: Any, agent_ids: list[str], timeout: float = 30.0) -> float:
    """Seconds until every agent answered an echo on its direct topic."""
    start = time.monotonic()
    for agent in agent_ids:
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                raise AgentSilent(agent, timeout)
            try:
                client.send("echo", {}, agent=agent).result(timeout=min(1.0, left))
                break
            except TimeoutError:
                pass
    return time.monotonic() - start


# -- counting what reaches the devices -------------------------------------------------------
class ReplyCounter:
    """A plain paho client on ``{root}/replies/#``: every reply as it was sent."""

    def __init__(self, host: str, port: int, root: str) -> None:
        self.replies: dict[str, list[bytes]] = defaultdict(list)
        self.redelivered: dict[str, int] = defaultdict(int)    # replies the broker sent again, flagged DUP
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.root = root
        self._c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"counter-{os.getpid()}-{free_port()}",
                              clean_session=False)
        # A watcher back before anyone else: what it misses, nobody could have got.
        self._c.reconnect_delay_set(min_delay=0.05, max_delay=0.1)  # type: ignore[arg-type]
        self._c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/replies/#", 1)
        self._c.on_subscribe = lambda *a: self._subscribed.set()
        self._c.on_message = self._on_message
        self._c.connect(host, port)
        self._c.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the reply counter could not subscribe")

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        import orjson
        try:
            task_id = orjson.loads(m.payload).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return
        with self._lock:
            self.replies[str(task_id)].append(bytes(m.payload))
            if m.dup:
                self.redelivered[str(task_id)] += 1

    def count(self, run: FaultRun, sends: dict[str, int]) -> FaultRun:
        """Fill ``run`` from what came for the submitted ids (``sends``: id ->
        times submitted)."""
        with self._lock:
            got = {tid: list(self.replies.get(tid, ())) for tid in sends}
        run.submitted = len(sends)
        run.answered = sum(1 for r in got.values() if r)
        run.lost = run.submitted - run.answered
        run.run_twice = sum(1 for r in got.values() if len(set(r)) > 1)
        run.duplicate_replies = sum(max(0, len(r) - sends[tid]) for tid, r in got.items())
        missing = [tid for tid, r in got.items() if not r]
        twice = [tid for tid, r in got.items() if len(set(r)) > 1]
        extra = [tid for tid, r in got.items() if len(r) > sends[tid]]
        if extra:
            run.details["duplicate_replies"] = {tid: [r.decode(errors="replace")[:160] for r in got[tid]]
                                                for tid in extra[:5]}
            # The broker's own QoS 1 resend to this subscriber (its PUBACK was
            # not taken before a restart): same bytes, flagged DUP; not an agent's.
            with self._lock:
                run.details["broker_redeliveries"] = sum(
                    min(self.redelivered.get(tid, 0), len(got[tid]) - sends[tid]) for tid in extra
                    if len(set(got[tid])) == 1)
        if missing:
            run.details["missing"] = missing[:20]
        if twice:
            run.details["run_twice"] = twice[:20]
        return run

    def close(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()


class FirmwareDevice:
    """A device as most firmware is: each task published once at QoS 1, and
    never submitted again by the application (paho's own resend of a publish
    left unacknowledged by a dropped connection stays on: that is QoS 1).
    ``accepted``: the ids whose PUBACK came, i.e. the tasks the broker took."""

    def __init__(self, host: str, port: int, root: str, *, device: str = "fw",
                 reconnect_s: tuple[float, float] = (1.0, 5.0)) -> None:
        self.root = root
        self.reply_to = f"{root}/replies/{device}"
        self.accepted: set[str] = set()
        self.published: list[str] = []
        self._by_mid: dict[int, str] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{device}-{os.getpid()}-{free_port()}")
        self._c.max_inflight_messages_set(100)
        self._c.reconnect_delay_set(min_delay=reconnect_s[0], max_delay=reconnect_s[1])   # type: ignore[arg-type]
        self._c.on_publish = self._on_publish
        self._connected = threading.Event()
        self._c.on_connect = lambda *a: self._connected.set()
        self._c.connect(host, port)
        self._c.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("the firmware device could not connect")

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            task_id = self._by_mid.pop(mid, None)
            if task_id is not None:
                self.accepted.add(task_id)
            else:
                self._early.add(mid)         # before send() learnt the mid

    def send(self, task_id: str, kind: str, args: dict[str, Any], *, weight: str | None = None) -> None:
        import orjson
        body: dict[str, Any] = {"id": task_id, "kind": kind, "args": args, "reply_to": self.reply_to}
        if weight:
            body["weight"] = weight
        # Not under self._lock: paho calls on_publish holding its own lock.
        info = self._c.publish(f"{self.root}/tasks", orjson.dumps(body), qos=1)
        with self._lock:
            self.published.append(task_id)
            if info.mid in self._early:      # its PUBACK came before publish() returned
                self._early.discard(info.mid)
                self.accepted.add(task_id)
            else:
                self._by_mid[info.mid] = task_id

    def close(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()


def answered_in_journals(workdir: Path) -> set[str]:
    """The task ids the agents of ``workdir`` (stopped) wrote down as answered."""
    from fogmesh.edge_agent.journal import Journal
    ids: set[str] = set()
    for path in workdir.glob("state-*/agent-*.journal"):
        journal = Journal(path, done_ttl_s=1e9)
        try:
            journal.open()
        except Exception:          # locked or unreadable: nothing to add
            continue
        ids.update(key for key in journal.done)
        journal.close()
    return ids


# -- disks that fill up ------------------------------------------------------------------
@contextlib.contextmanager
def mounted_tmpfs(path: Path, *, size_kb: int, read_only: bool = False) -> Iterator[Path]:
    """A real filesystem of ``size_kb`` (a disk that fills up), or a read-only
    one. Mounting needs root (CI has it)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs for a disk fault (run as root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, *, leave_bytes: int) -> Path:
    """Fill the filesystem of ``path`` until ``leave_bytes`` are free; returns
    the filler file (delete it to free the space again)."""
    filler = path / "filler"
    st = os.statvfs(path)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler
