"""The systems ``fogmesh bench rtt`` measures, each started as its users
would start it: a raw paho request/reply through a responder process, a
fogmesh ``echo`` through an agent process (default or tuned flags, MQTT 5,
or another fogmesh version's), Celery 5 + Redis with a solo-pool worker, and
the embedded broker; and how each is measured: sequential round trips and a
pipelined run with N in flight."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

from fogmesh import codec
from fogmesh.broker.ports import free_port, wait_port
from fogmesh.broker.processes import stop_processes
from fogmesh.percentiles import percentile
from fogmesh.properties import MessageProperties

PAYLOAD = "x" * 100
DEFAULT_FLAGS = "fogmesh echo (default flags)"
TUNED_FLAGS = ["--concurrency", "1", "--log-level", "WARNING"]


@dataclass
class Round:
    p50_ms: float
    p99_ms: float
    tasks_per_s: float


@dataclass
class Row:
    """One system on one broker: the median of its rounds, and each round."""

    broker: str
    system: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    tasks_per_s: float | None = None
    note: str = ""
    rounds: list[Round] = field(default_factory=list)

    @classmethod
    def of(cls, broker: str, system: str, rounds: list[Round], note: str = "") -> Row:
        return cls(broker, system, statistics.median(r.p50_ms for r in rounds),
                   statistics.median(r.p99_ms for r in rounds), statistics.median(r.tasks_per_s for r in rounds),
                   note, rounds)


class System:
    """Something measured: ``one()`` is a sequential round trip in ms,
    ``start_one(done)`` sends one request for the pipelined run."""

    def __init__(self, name: str, one: Callable[[], float],
                 start_one: Callable[[Callable[[], None]], None], *, note: str = "") -> None:
        self.name, self.one, self.start_one, self.note = name, one, start_one, note
        self.rounds: list[Round] = []

    def measure_round(self, broker: str, args: argparse.Namespace, k: int) -> None:
        lat = sequential(self.one, args.requests, f"{broker} {self.name}, round {k}")
        tput = pipelined(self.start_one, args.pipelined, args.inflight, what=self.name)
        self.rounds.append(Round(percentile(lat, 0.5), percentile(lat, 0.99), tput))


def progress(msg: str) -> None:
    print(f"[bench rtt] {msg}", file=sys.stderr, flush=True)


def sequential(fn: Callable[[], float], n: int, label: str) -> list[float]:
    out = [fn() for _ in range(n)]
    progress(f"{label}: {n} round trips, p50 {percentile(out, 0.5):.3f} ms")
    return out


def _proc(args: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, **kw)


def _stop(proc: subprocess.Popen) -> None:
    stop_processes([proc])


def pipelined(start_one: Callable[[Callable[[], None]], None], total: int, inflight: int, *,
              what: str) -> float:
    """Tasks per second with ``inflight`` outstanding: ``start_one(done)`` sends
    one request and calls ``done()`` when its reply came."""
    window = threading.Semaphore(inflight)
    finished = threading.Semaphore(0)

    def done() -> None:
        window.release()
        finished.release()

    start = time.perf_counter()
    for _ in range(total):
        window.acquire()
        start_one(done)
    for _ in range(total):
        if not finished.acquire(timeout=60):
            raise TimeoutError(f"{what} pipelined run stalled")
    return total / (time.perf_counter() - start)


def raw_system(stack: ExitStack, host: str, port: int) -> System:
    from fogmesh.bench.raw_mqtt import Requester
    topic = f"bench/raw/{uuid.uuid4().hex[:8]}"
    responder = _proc([sys.executable, "-m", "fogmesh.bench.raw_mqtt", host, str(port), topic],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stack.callback(_stop, responder)
    stack.callback(lambda: responder.stdin and responder.stdin.close())
    assert responder.stdout is not None
    responder.stdout.readline()  # "ready"
    req = Requester(host, port, topic)
    stack.callback(req.close)
    for _ in range(100):
        req.request()
    return System("raw paho MQTT", req.request, req.send)


def agent_system(stack: ExitStack, url: str, name: str, flags: list[str], *, note: str = "",
                 python: str = sys.executable) -> System:
    """An agent started as README says (``fogmesh agent --id X --broker URL``,
    plus a root of its own and ``flags``; by ``python``, whose environment
    has the fogmesh it runs), asked by a FogClient."""
    from fogmesh.devices.client import FogClient
    client = stack.enter_context(FogClient(url, root=_start_agent(stack, url, flags, python=python)))

    def request(timeout: float = 10.0) -> float:
        return client.submit("echo", {"p": PAYLOAD}, timeout=timeout).latency_ms
    _ready(request)

    def check() -> None:
        assert client.duplicates == 0, "fogmesh delivered a duplicate reply"
    stack.callback(check)
    return System(name, request, lambda done: client.send("echo", {"p": PAYLOAD}).add_done_callback(lambda _f: done()),
                  note=note)


class PairRequester:
    """A minimal app on fogmesh's adapter asking one agent. ``mqtt5``: the
    MQTT 5 way (no reply_to in the JSON; Response Topic and Correlation Data,
    replies matched by their Correlation Data); else the 3.1.1 way (reply_to
    in the JSON, replies matched by the id in their JSON). Both do the same
    work otherwise, so a paired run measures the protocol, not the app."""

    def __init__(self, url: str, root: str, *, mqtt5: bool = True) -> None:
        from fogmesh.mqtt import MqttClient
        self.mqtt5 = mqtt5
        self.tasks = f"{root}/tasks"
        self.response_topic = f"{root}/{'v5' if mqtt5 else 'v311'}/{uuid.uuid4().hex[:8]}"
        self._pending: dict[bytes, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self.client = MqttClient(url, mqtt5=mqtt5, on_message=self._on_reply)
        self.client.start()
        self.client.subscribe(self.response_topic)

    def _on_reply(self, m: Any) -> None:
        if self.mqtt5:
            corr = m.properties.correlation_data if m.properties else None
        else:
            task_id = codec.decode(m.payload).get("id")
            corr = bytes.fromhex(task_id) if isinstance(task_id, str) else None
        with self._lock:
            done = self._pending.pop(corr, None) if corr is not None else None
        if done is not None:
            done()

    def send(self, done: Callable[[], None]) -> None:
        corr = uuid.uuid4().bytes
        with self._lock:
            self._pending[corr] = done
        task: dict[str, Any] = {"id": corr.hex(), "kind": "echo", "args": {"p": PAYLOAD}}
        if self.mqtt5:
            props = MessageProperties(response_topic=self.response_topic, correlation_data=corr)
            self.client.publish(self.tasks, codec.encode(task), properties=props)
        else:
            task["reply_to"] = self.response_topic
            self.client.publish(self.tasks, codec.encode(task))

    def request(self, timeout: float = 10.0) -> float:
        event = threading.Event()
        start = time.perf_counter()
        self.send(event.set)
        if not event.wait(timeout):
            raise TimeoutError(f"no {'MQTT 5' if self.mqtt5 else '3.1.1'} reply within {timeout:g} s")
        return 1000 * (time.perf_counter() - start)


def _start_agent(stack: ExitStack, url: str, flags: list[str], *, python: str = sys.executable) -> str:
    """An agent started as README says (``fogmesh agent --id X --broker URL``),
    with a root of its own and ``flags``; returns the root. Started from the
    system's temp directory, so that ``python`` imports its own fogmesh,
    not a checkout in the current directory."""
    root = f"bench/{uuid.uuid4().hex[:8]}"
    agent = _proc([python, "-m", "fogmesh", "agent", "--id", f"bench-{uuid.uuid4().hex[:6]}",
                   "--broker", url, "--root", root, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  cwd=tempfile.gettempdir())
    stack.callback(_stop, agent)
    return root


def _ready(request: Callable[..., float]) -> None:
    """Until the agent answers (it subscribes after start-up), then warm up."""
    deadline = time.monotonic() + 30
    while True:
        try:
            request(timeout=1)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    for _ in range(100):
        request()


def mqtt5_system(stack: ExitStack, url: str) -> System:
    """An agent on ``--mqtt 5`` asked the MQTT 5 way (Response Topic and
    Correlation Data, no reply_to)."""
    req = PairRequester(url, _start_agent(stack, url, ["--mqtt", "5"]))
    stack.callback(req.client.stop)
    _ready(req.request)
    return System("fogmesh MQTT 5 rr", req.request, req.send, note="agent --mqtt 5")


def bench_celery(args: argparse.Namespace) -> Row:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        return Row("redis", "celery+redis", note="skipped: redis-server not installed "
                   "(apt-get install redis-server)")
    try:
        import celery  # noqa: F401
    except ImportError:
        return Row("redis", "celery+redis", note="skipped: pip install -e '.[bench]'")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="fogmesh-redis-")
    with ExitStack() as stack:
        redis = _proc([redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
        stack.callback(shutil.rmtree, workdir, True)
        stack.callback(_stop, redis)
        if not wait_port("127.0.0.1", port, 10):
            return Row("redis", "celery+redis", note="skipped: redis-server did not start")
        env = {"FOGMESH_BENCH_REDIS": f"redis://127.0.0.1:{port}/0"}
        os.environ.update(env)
        worker = _proc([sys.executable, "-m", "celery", "-A", "fogmesh.bench.celery_app", "worker",
                        "--pool", "solo", "--concurrency", "1", "--loglevel", "WARNING",
                        "--without-gossip", "--without-mingle", "--without-heartbeat"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(_stop, worker)
        import importlib

        import fogmesh.bench.celery_app as celery_app
        importlib.reload(celery_app)   # pick up the broker URL set above
        echo = celery_app.echo
        echo.delay(PAYLOAD).get(timeout=60)
        for _ in range(50):
            echo.delay(PAYLOAD).get(timeout=10)

        def one() -> float:
            t0 = time.perf_counter()
            echo.delay(PAYLOAD).get(timeout=10)
            return 1000 * (time.perf_counter() - t0)

        lat = sequential(one, args.requests, "celery+redis")
        total = max(args.inflight, args.pipelined // 5)
        start = time.perf_counter()
        pending: list[Any] = []
        for _ in range(total):
            pending.append(echo.delay(PAYLOAD))
            if len(pending) >= args.inflight:
                pending.pop(0).get(timeout=30)
        for r in pending:
            r.get(timeout=30)
        tput = total / (time.perf_counter() - start)
        return Row.of("redis", "celery+redis", [Round(percentile(lat, 0.5), percentile(lat, 0.99), tput)],
                      note="one round")
    return Row("redis", "celery+redis", note="failed")  # pragma: no cover


def start_amqtt() -> tuple[subprocess.Popen, int]:
    port = free_port()    # as `fogmesh broker` runs by default: its state kept (in a throwaway directory)
    proc = _proc([sys.executable, "-m", "fogmesh", "broker", "--port", str(port), "--log-level", "WARNING",
                  "--persistence", tempfile.mkdtemp()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port("127.0.0.1", port, 20):
        _stop(proc)
        raise RuntimeError("embedded broker did not start")
    return proc, port
