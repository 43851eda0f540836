"""The steps the fault scenarios share (:mod:`fogmesh.bench.faults`): a site
(a broker, agents, a topic root), a device ready to submit, settling and
counting what came back, and a look at a retained message."""

from __future__ import annotations

import contextlib
import time
import uuid
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any, Callable, Iterator

from fogmesh.bench.faultkit import (
    Agents,
    BrokerProcess,
    FaultRun,
    FirmwareDevice,
    ReplyCounter,
    answered_in_journals,
    wait_answering,
)
from fogmesh.edge_agent.confirmations import WITHDRAWN_WAIT_S

MIX = [("echo", {"n": 1}, None), ("sleep", {"ms": 20}, None),
       ("sha256", {"data": "x", "rounds": 2000}, "medium"), ("stats", {"values": [1, 2, 3]}, None)]
MEDIUM = {"data": "fog", "rounds": 3000}


@contextlib.contextmanager
def site(broker_name: str, workdir: Path) -> Iterator[tuple[BrokerProcess, Agents, str]]:
    """A broker, an agent pool and a fresh topic root; everything stopped after."""
    broker = BrokerProcess(broker_name, workdir).start()
    agents = Agents(workdir)
    try:
        yield broker, agents, f"faults/{uuid.uuid4().hex[:8]}"
    finally:
        agents.close()
        broker.close()


@contextlib.contextmanager
def ready_client(broker: BrokerProcess, root: str, ids: list[str]) -> Iterator[Any]:
    """A FogClient once every agent answers and has seen its peers."""
    from fogmesh.devices.client import FogClient
    with FogClient(broker.url, root=root) as client:
        wait_answering(client, ids)
        time.sleep(1.0)                  # two presence periods: everyone knows everyone
        yield client


def settle(futures: dict[str, Future[Any]], timeout: float) -> None:
    wait(list(futures.values()), timeout=timeout)
    time.sleep(2.0)                      # room for a late second answer


def tally(run: FaultRun, counter: ReplyCounter, client: Any, futures: dict[str, Future[Any]]) -> FaultRun:
    """What the wire showed, and what the device got: a task is lost when its
    submitter never got an answer."""
    sends = {tid: client.attempts(tid) for tid in futures}
    counter.count(run, sends)
    missing = [tid for tid, f in futures.items() if not f.done()]
    run.lost = len(missing)
    run.answered = run.submitted - run.lost
    if missing:
        run.details["missing"] = missing[:20]
    return run


def settled_count(futures: dict[str, Future[Any]], *, quiet_s: float, timeout: float) -> int:
    """How many of ``futures`` are answered once no new answer came for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = sum(1 for f in futures.values() if f.done())
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.1)
    return last


def last_answer(futures: dict[str, Future[Any]]) -> list[float]:
    """A cell that ends up holding when the last of ``futures`` was answered."""
    cell = [0.0]

    def seen(_: Future[Any]) -> None:
        cell[0] = max(cell[0], time.monotonic())

    for f in futures.values():
        f.add_done_callback(seen)
    return cell


def tally_once(run: FaultRun, counter: ReplyCounter, device: FirmwareDevice, *, workdir: Path | None = None,
               quiet_s: float = WITHDRAWN_WAIT_S + 1.5, timeout: float = 120.0) -> FaultRun:
    """For a device that sends each task once: every task the broker took
    (its PUBACK came) must get one answer. ``lost``: taken and never
    answered. With ``workdir``, the agents' journals (the agents stopped)
    tell which of the lost ones an agent had answered (``answered_and_lost``:
    an answer that never reached the device, fogmesh's own loss); the rest
    the broker dropped. It waits until no new answer came for ``quiet_s``:
    longer than an agent waits before it sends again an answer cut off
    whose task did not come back (``WITHDRAWN_WAIT_S``), or those were
    counted lost on a box where nothing else was left to answer."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:          # until no new answer for quiet_s
        n = sum(1 for tid in device.accepted if counter.replies.get(tid))
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s or n == len(device.accepted):
            break
        time.sleep(0.1)
    time.sleep(1.0)                             # room for a late second answer
    counter.count(run, {tid: 1 for tid in device.accepted})
    run.details["published"] = len(device.published)
    run.details["accepted_by_broker"] = len(device.accepted)
    return run


def journals_say(run: FaultRun, workdir: Path) -> None:
    """Which of ``run``'s lost tasks an agent had answered (read once the agents stopped)."""
    missing = set(run.details.get("all_missing", ()))
    answered = answered_in_journals(workdir)
    run.details["answered_and_lost"] = len(missing & answered)
    if missing & answered:
        run.details["answered_and_lost_ids"] = sorted(missing & answered)[:20]
    run.details["dropped_by_broker"] = len(missing - answered)


def wait_retained(broker: BrokerProcess, topic: str, ok: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = retained(broker, topic, timeout=1.0)
        if got is not None and ok(got):
            return got
        time.sleep(0.3)
    return None


def retained(broker: BrokerProcess, topic: str, timeout: float = 3.0) -> dict[str, Any] | None:
    """The retained message on ``topic``, as a fresh subscriber sees it."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from fogmesh import codec
    got: list[bytes] = []
    seen = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
    c.on_message = lambda c, u, m: (got.append(bytes(m.payload)), seen.set())
    c.connect(broker.host, broker.port)
    c.loop_start()
    seen.wait(timeout)
    c.loop_stop()
    c.disconnect()
    return codec.decode(got[-1]) if got and got[-1] else None
