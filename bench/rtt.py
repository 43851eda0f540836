"""``fogmesh bench rtt``: what does fogmesh cost over raw MQTT, and over Celery+Redis?

One run, one machine: for each broker (mosquitto, embedded amqtt) it measures a
raw paho request/reply through a responder process, a fogmesh ``echo`` through
an agent process, and (once) Celery 5 + Redis ``echo.delay().get()`` with a
solo-pool worker; sequential round trips (p50/p99) and pipelined throughput
with N in flight. Prints a table, or the same figures with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any, Callable

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port, wait_port
from fogmesh.broker.processes import stop_processes

PAYLOAD = "x" * 100


@dataclass
class Row:
    broker: str
    system: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    tasks_per_s: float | None = None
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def progress(msg: str) -> None:
    print(f"[bench rtt] {msg}", file=sys.stderr, flush=True)


def sequential(fn: Callable[[], float], n: int, label: str) -> list[float]:
    out = []
    step = max(1, n // 4)
    for i in range(n):
        out.append(fn())
        if (i + 1) % step == 0:
            progress(f"{label}: {i + 1}/{n} round trips")
    return out


def _proc(args: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, **kw)


def _stop(proc: subprocess.Popen) -> None:
    stop_processes([proc])


def bench_raw(host: str, port: int, broker: str, args: argparse.Namespace) -> Row:
    from fogmesh.bench.raw_mqtt import Requester
    topic = f"bench/raw/{uuid.uuid4().hex[:8]}"
    responder = _proc([sys.executable, "-m", "fogmesh.bench.raw_mqtt", host, str(port), topic],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert responder.stdout is not None
        responder.stdout.readline()  # "ready"
        req = Requester(host, port, topic)
        for _ in range(100):
            req.request()
        lat = sequential(req.request, args.requests, f"{broker} raw MQTT")
        req.drain_latencies()
        tput = req.pipelined(args.pipelined, args.inflight)
        req.close()
        return Row(broker, "raw paho MQTT", percentile(lat, 0.5), percentile(lat, 0.99), tput)
    finally:
        if responder.stdin:
            responder.stdin.close()
        _stop(responder)


def bench_fogmesh(url: str, broker: str, args: argparse.Namespace, *, mqtt: str = "3.1.1") -> list[Row]:
    """The agent with the given protocol; with MQTT 5, also asked the MQTT 5 way."""
    from fogmesh.devices.client import FogClient
    root = f"bench/{uuid.uuid4().hex[:8]}"
    agent = _proc([sys.executable, "-m", "fogmesh", "agent", "--id", "bench-1", "--broker", url,
                   "--root", root, "--log-level", "WARNING", "--concurrency", "1", "--mqtt", mqtt])
    try:
        with FogClient(url, root=root) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.submit("echo", {"p": PAYLOAD}, timeout=1)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
            for _ in range(100):
                client.submit("echo", {"p": PAYLOAD})
            lat = sequential(lambda: client.submit("echo", {"p": PAYLOAD}).latency_ms,
                             args.requests, f"{broker} fogmesh echo")
            tput = pipelined_fogmesh(client, args.pipelined, args.inflight)
            assert client.duplicates == 0, "fogmesh delivered a duplicate reply"
        system = "fogmesh echo" if mqtt == "3.1.1" else "fogmesh echo, agent MQTT 5"
        rows = [Row(broker, system, percentile(lat, 0.5), percentile(lat, 0.99), tput)]
        if mqtt == "5":                  # the same agent, asked the MQTT 5 way
            rows.append(bench_mqtt5(url, root, broker, args))
        return rows
    finally:
        _stop(agent)


class V5Requester:
    """An MQTT 5 app: no reply_to in the JSON, a Response Topic and
    Correlation Data instead; replies matched by their Correlation Data."""

    def __init__(self, url: str, root: str) -> None:
        from fogmesh.mqtt import MqttClient
        self.tasks = f"{root}/tasks"
        self.response_topic = f"{root}/v5/{uuid.uuid4().hex[:8]}"
        self._pending: dict[bytes, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self.client = MqttClient(url, mqtt5=True, on_message=self._on_reply)
        self.client.start()
        self.client.subscribe(self.response_topic)

    def _on_reply(self, m: Any) -> None:
        corr = m.properties.correlation_data if m.properties else None
        with self._lock:
            done = self._pending.pop(corr, None) if corr is not None else None
        if done is not None:
            done()

    def send(self, done: Callable[[], None]) -> None:
        from fogmesh import codec
        from fogmesh.properties import MessageProperties
        corr = uuid.uuid4().bytes
        with self._lock:
            self._pending[corr] = done
        task = {"id": corr.hex(), "kind": "echo", "args": {"p": PAYLOAD}}
        self.client.publish(self.tasks, codec.encode(task),
                            properties=MessageProperties(response_topic=self.response_topic, correlation_data=corr))

    def request(self) -> float:
        event = threading.Event()
        start = time.perf_counter()
        self.send(event.set)
        if not event.wait(10):
            raise TimeoutError("no MQTT 5 reply within 10 s")
        return 1000 * (time.perf_counter() - start)



def bench_mqtt5(url: str, root: str, broker: str, args: argparse.Namespace) -> Row:
    req = V5Requester(url, root)
    try:
        for _ in range(100):
            req.request()
        lat = sequential(req.request, args.requests, f"{broker} fogmesh MQTT 5 request/response")
        tput = pipelined(req.send, args.pipelined, args.inflight, what="MQTT 5")
        return Row(broker, "fogmesh MQTT 5 rr", percentile(lat, 0.5), percentile(lat, 0.99), tput)
    finally:
        req.client.stop()


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


def pipelined_fogmesh(client: Any, total: int, inflight: int) -> float:
    return pipelined(lambda done: client.send("echo", {"p": PAYLOAD}).add_done_callback(lambda _f: done()),
                     total, inflight, what="fogmesh")


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
        return Row("redis", "celery+redis", percentile(lat, 0.5), percentile(lat, 0.99), tput)
    return Row("redis", "celery+redis", note="failed")  # pragma: no cover


def start_amqtt() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = _proc([sys.executable, "-m", "fogmesh", "broker", "--port", str(port),
                  "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port("127.0.0.1", port, 20):
        _stop(proc)
        raise RuntimeError("embedded broker did not start")
    return proc, port


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[Row] = []
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    for name in brokers:
        with ExitStack() as stack:
            if name == "mosquitto":
                m = Mosquitto(persistence=False).start()
                stack.callback(m.cleanup)
                host, port = m.host, m.port
            elif name == "amqtt":
                proc, port = start_amqtt()
                stack.callback(_stop, proc)
                host = "127.0.0.1"
            else:
                raise SystemExit(f"unknown broker {name!r}: use mosquitto and/or amqtt")
            url = f"mqtt://{host}:{port}"
            progress(f"{name} on {url}")
            rows.append(bench_raw(host, port, name, args))
            rows.extend(bench_fogmesh(url, name, args))
            if name == "mosquitto":
                rows.extend(bench_fogmesh(url, name, args, mqtt="5"))
    if not args.no_celery:
        progress("celery+redis")
        rows.append(bench_celery(args))
    return summarize(rows, args)


def summarize(rows: list[Row], args: argparse.Namespace) -> dict[str, Any]:
    by = {(r.broker, r.system): r for r in rows}
    celery = by.get(("redis", "celery+redis"))
    ratios = {}
    for broker in {r.broker for r in rows} - {"redis"}:
        raw, fog = by.get((broker, "raw paho MQTT")), by.get((broker, "fogmesh echo"))
        if not (raw and fog and raw.p50_ms and fog.p50_ms):
            continue
        entry: dict[str, Any] = {
            "p50_vs_raw": fog.p50_ms / raw.p50_ms,
            "throughput_vs_raw": (fog.tasks_per_s or 0) / (raw.tasks_per_s or 1),
        }
        if celery and celery.p50_ms:
            entry["p50_vs_celery"] = fog.p50_ms / celery.p50_ms
            entry["throughput_vs_celery"] = (fog.tasks_per_s or 0) / (celery.tasks_per_s or 1)
        ratios[broker] = entry
    targets = {}
    v5, v311 = by.get(("mosquitto", "fogmesh MQTT 5 rr")), by.get(("mosquitto", "fogmesh echo"))
    if v5 and v311 and v5.p50_ms and v311.p50_ms and "mosquitto" in ratios:
        ratios["mosquitto"]["mqtt5_p50_vs_311"] = v5.p50_ms / v311.p50_ms
        targets["mqtt5_request_response_p50_within_10pct_of_311"] = v5.p50_ms <= 1.1 * v311.p50_ms
    if "mosquitto" in ratios:
        r = ratios["mosquitto"]
        targets = {"echo_p50_at_most_1.5x_raw_on_mosquitto": r["p50_vs_raw"] <= 1.5,
                   "throughput_at_least_50pct_of_raw_on_mosquitto": r["throughput_vs_raw"] >= 0.5}
        if "p50_vs_celery" in r:
            targets["faster_than_celery_redis"] = r["p50_vs_celery"] < 1.0
    return {"config": {"requests": args.requests, "pipelined": args.pipelined,
                       "inflight": args.inflight, "payload_bytes": len(PAYLOAD), "qos": 1,
                       "python": sys.version.split()[0]},
            "results": [asdict(r) for r in rows], "ratios": ratios, "targets": targets}


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [f"fogmesh bench rtt: {c['requests']} sequential round trips, {c['pipelined']} pipelined "
             f"with {c['inflight']} in flight, {c['payload_bytes']}-byte payloads, QoS 1, loopback",
             "",
             f"{'broker':<10} {'system':<26} {'p50 ms':>8} {'p99 ms':>8} {'tasks/s':>9}  note",
             "-" * 75]
    for r in report["results"]:
        lines.append(f"{r['broker']:<10} {r['system']:<26} {_f(r['p50_ms'], '.3f'):>8} "
                     f"{_f(r['p99_ms'], '.3f'):>8} {_f(r['tasks_per_s'], '.0f'):>9}  {r['note']}")
    lines += ["", f"{'fogmesh ratios':<16} {'p50 / raw':>10} {'tput / raw':>11} {'p50 / celery':>13} "
                  f"{'tput / celery':>14}"]
    for broker, r in sorted(report["ratios"].items()):
        lines.append(f"{broker:<16} {r['p50_vs_raw']:>9.2f}x {100 * r['throughput_vs_raw']:>10.0f}% "
                     f"{_f(r.get('p50_vs_celery'), '.2f'):>12}x {_f(r.get('throughput_vs_celery'), '.1f'):>13}x")
    for broker, r in sorted(report["ratios"].items()):
        if "mqtt5_p50_vs_311" in r:
            lines.append(f"{broker}: MQTT 5 request/response (Response Topic + Correlation Data, agent --mqtt 5) "
                         f"p50 is {r['mqtt5_p50_vs_311']:.2f}x the 3.1.1 path (reply_to in the JSON, default agent)")
    if report["targets"]:
        lines += ["", "targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}"
                                              for k, v in report["targets"].items())]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
