"""``fogmesh bench faults``: nothing lost, nothing doubled, under each fault.

Each scenario runs the system as an operator would (brokers and agents as
processes through the CLI, ``kill -9``, a full disk, a restarted broker), a
device that submits with :class:`~fogmesh.devices.client.FogClient`, and a plain paho
subscriber counting every reply on the wire. One table: fault | broker |
submitted | answered | lost | run twice | duplicate replies | time to recover.
``tests/test_faults.py`` runs the same scenarios and asserts 0 lost, 0 run
twice and 0 duplicate replies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import uuid
from concurrent.futures import Future, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

from fogmesh.bench.faultkit import (
    Agents,
    AgentSilent,
    BrokerProcess,
    FaultRun,
    FirmwareDevice,
    ReplyCounter,
    answered_in_journals,
    fill,
    mounted_tmpfs,
    progress,
    wait_answering,
)
from fogmesh.bench.node_kill import cluster_node_kill
from fogmesh.bench.outages import power_cut
from fogmesh.broker.processes import stop_processes

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


# -- scenarios ---------------------------------------------------------------------------
def agent_sigkill(broker_name: str, workdir: Path, *, tasks: int = 600) -> FaultRun:
    """Three agents, ``tasks`` mixed tasks in flight, one agent SIGKILLed a third
    of the way in, for good."""
    run = FaultRun("an agent SIGKILLed under load", broker_name)
    with site(broker_name, workdir) as (broker, agents, root):
        ids = ["c0", "c1", "c2"]
        for a in ids:
            agents.start(a, broker.url, root, "--concurrency", "2", "--takeover-grace", "1.5")
        counter = ReplyCounter(broker.host, broker.port, root)
        with ready_client(broker, root, ids) as client:
            futures = {}
            for n in range(tasks):
                kind, args, weight = MIX[n % len(MIX)]
                futures[f"k-{n}"] = client.send(kind, args, weight=weight, task_id=f"k-{n}")
                if n == tasks // 3:
                    agents.kill("c0")
                    killed = time.monotonic()
                time.sleep(0.004)
            last = last_answer(futures)
            settle(futures, 90)
            run.recover_s = round(last[0] - killed, 1) if last[0] else None
            tally(run, counter, client, futures)
        counter.close()
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


def broker_restart(broker_name: str, workdir: Path, *, kill: bool, tasks: int = 1000,
                   down_s: float = 2.0) -> FaultRun:
    """Three agents working through ``tasks`` medium tasks; the broker is stopped
    (SIGTERM) or killed (SIGKILL) a third of the way in and started again
    ``down_s`` later on the same port."""
    how = "SIGKILL" if kill else "SIGTERM"
    run = FaultRun(f"broker restarted ({how}, back after {down_s:g} s)", broker_name)
    with site(broker_name, workdir) as (broker, agents, root):
        ids = ["r0", "r1", "r2"]
        for a in ids:
            agents.start(a, broker.url, root, "--concurrency", "2")
        counter = ReplyCounter(broker.host, broker.port, root)
        with ready_client(broker, root, ids) as client:
            futures = {}
            for n in range(tasks):
                futures[f"m-{n}"] = client.send("sha256", MEDIUM, weight="medium", task_id=f"m-{n}")
                if n == tasks // 3:
                    broker.kill() if kill else broker.stop()
                    progress(f"{broker_name}: broker {how}ed; back in {down_s:g} s")
                    time.sleep(down_s)
                    broker.start()
                    back = time.monotonic()
                time.sleep(0.003)
            try:                   # every agent answers again (its direct topic)
                wait_answering(client, ids, timeout=60)
                run.recover_s = round(time.monotonic() - back, 1)
            except AgentSilent as exc:
                run.note = str(exc)                   # and what it said last, for whoever reads the failure
                run.details["silent_agent_log"] = agents.log(exc.agent).splitlines()[-30:]
            settle(futures, 120)
            tally(run, counter, client, futures)
        counter.close()
    return run


def tally_once(run: FaultRun, counter: ReplyCounter, device: FirmwareDevice, *, workdir: Path | None = None,
               quiet_s: float = 3.0, timeout: float = 120.0) -> FaultRun:
    """For a device that sends each task once: every task the broker took
    (its PUBACK came) must get one answer. ``lost``: taken and never
    answered. With ``workdir``, the agents' journals (the agents stopped)
    tell which of the lost ones an agent had answered (``answered_and_lost``:
    an answer that never reached the device, fogmesh's own loss); the rest
    the broker dropped."""
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


def broker_restart_once(broker_name: str, workdir: Path, *, kill: bool, tasks: int = 1000,
                        down_s: float = 2.0, device_reconnect_s: tuple[float, float] = (1.0, 5.0)) -> FaultRun:
    """As :func:`broker_restart`, the device firmware that publishes each task
    once and never again: the broker's own losses show here."""
    how = "SIGKILL" if kill else "SIGTERM"
    run = FaultRun(f"broker restarted ({how}, back after {down_s:g} s), each task sent once", broker_name)
    with site(broker_name, workdir) as (broker, agents, root):
        ids = ["f0", "f1", "f2"]
        for a in ids:
            agents.start(a, broker.url, root, "--concurrency", "2")
        counter = ReplyCounter(broker.host, broker.port, root)
        with ready_client(broker, root, ids):
            pass
        device = FirmwareDevice(broker.host, broker.port, root, reconnect_s=device_reconnect_s)
        try:
            for n in range(tasks):
                device.send(f"f-{n}", "sha256", MEDIUM, weight="medium")
                if n == tasks // 3:
                    broker.kill() if kill else broker.stop()
                    progress(f"{broker_name}: broker {how}ed; back in {down_s:g} s")
                    time.sleep(down_s)
                    broker.start()
                time.sleep(0.003)
            tally_once(run, counter, device)
        finally:
            device.close()
            counter.close()
        run.details["all_missing"] = [tid for tid in device.accepted if not counter.replies.get(tid)]
        agents.close()
        journals_say(run, workdir)
        run.details.pop("all_missing")
        run.note = (f"{run.details['accepted_by_broker']} of {run.details['published']} taken by the broker; "
                    f"of the lost, {run.details['answered_and_lost']} answered by an agent, "
                    f"{run.details['dropped_by_broker']} dropped by the broker")
    return run


def journal_disk_full(broker_name: str, workdir: Path, *, tasks: int = 300) -> FaultRun:
    """Agent j0's journal is on a disk that fills up under load; j1 is fine."""
    from fogmesh import codec
    from fogmesh.devices.client import FogClient
    run = FaultRun("an agent's journal disk fills up", broker_name)
    with site(broker_name, workdir) as (broker, agents, root), \
            mounted_tmpfs(workdir / "j0-disk", size_kb=256) as disk:
        agents.start("j0", broker.url, root, "--concurrency", "2", state_dir=disk)
        agents.start("j1", broker.url, root, "--concurrency", "2")
        counter = ReplyCounter(broker.host, broker.port, root)
        with FogClient(broker.url, root=root) as client:
            wait_answering(client, ["j0", "j1"])
            filler = fill(disk, leave_bytes=4096)
            futures = {f"j-{n}": client.send("sha256", MEDIUM, weight="medium", task_id=f"j-{n}")
                       for n in range(tasks)}
            settle(futures, 90)
            tally(run, counter, client, futures)
            presence = _retained(broker, f"{root}/presence/j0")
            log = agents.log("j0")
            run.details["presence"] = {k: presence.get(k) for k in ("state", "reason")} if presence else None
            run.details["error_logged"] = " ERROR " in log and ("No space left" in log or "disk full" in log)
            filler.unlink()
            freed = time.monotonic()
            while time.monotonic() - freed < 20:
                p = _retained(broker, f"{root}/presence/j0")
                if p and p.get("state") == "online":
                    run.recover_s = round(time.monotonic() - freed, 1)
                    break
                time.sleep(0.2)
            run.note = f"j0 said {codec.encode(run.details['presence']).decode()}" if presence else "no presence"
        counter.close()
    return run


def lone_agent_disk_full_once(broker_name: str, workdir: Path, *, tasks: int = 200) -> FaultRun:
    """One agent alone; its journal disk fills up while a device that sends
    each task once keeps sending: every task the broker took gets one reply
    (its result, or a ``degraded`` error that says why), and once the disk
    has room again the agent is back ``online`` by itself and runs tasks."""
    run = FaultRun("a lone agent's journal disk fills up, each task sent once", broker_name)
    with site(broker_name, workdir) as (broker, agents, root), \
            mounted_tmpfs(workdir / "l0-disk", size_kb=256) as disk:
        agents.start("l0", broker.url, root, "--concurrency", "2", state_dir=disk)
        counter = ReplyCounter(broker.host, broker.port, root)
        with ready_client(broker, root, ["l0"]):
            pass
        device = FirmwareDevice(broker.host, broker.port, root)
        try:
            filler = fill(disk, leave_bytes=4096)
            for n in range(tasks):
                device.send(f"l-{n}", "sha256", MEDIUM, weight="medium")
                time.sleep(0.01)
            tally_once(run, counter, device)
            presence = _retained(broker, f"{root}/presence/l0")
            run.details["presence"] = {k: presence.get(k) for k in ("state", "reason")} if presence else None
            codes: dict[str, int] = {}
            for tid in device.accepted:
                for body in counter.replies.get(tid, [])[:1]:
                    reply = json.loads(body)
                    code = reply["status"] if reply["status"] == "ok" else reply["error"]["code"]
                    codes[code] = codes.get(code, 0) + 1
            run.details["replies"] = codes
            filler.unlink()
            freed = time.monotonic()
            back = _wait_retained(broker, f"{root}/presence/l0", lambda p: p.get("state") == "online", 20)
            if back is not None:
                run.recover_s = round(time.monotonic() - freed, 1)
            after = FaultRun("after", broker_name)
            for n in range(20):
                device.send(f"l-after-{n}", "sha256", MEDIUM, weight="medium")
            time.sleep(0.5)
            after_ids = {f"l-after-{n}" for n in range(20)}
            ok_after = 0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                ok_after = sum(1 for tid in after_ids for body in counter.replies.get(tid, [])[:1]
                               if json.loads(body)["status"] == "ok")
                if ok_after == len(after_ids):
                    break
                time.sleep(0.1)
            run.details["ok_after_freed"] = ok_after
            del after
        finally:
            device.close()
            counter.close()
        run.note = (f"replies {run.details['replies']}; said {run.details['presence']}; "
                    f"{run.details['ok_after_freed']}/20 ok after the disk was freed")
    return run


def duplicate_agent_id(broker_name: str, workdir: Path, *, tasks: int = 300) -> FaultRun:
    """A second host starts an agent with the id of a running one while tasks flow."""
    from fogmesh.devices.client import FogClient
    run = FaultRun("a second agent started with a running one's --id", broker_name)
    with site(broker_name, workdir) as (broker, agents, root):
        agents.start("d0", broker.url, root, "--concurrency", "2")
        agents.start("d1", broker.url, root, "--concurrency", "2")
        counter = ReplyCounter(broker.host, broker.port, root)
        with FogClient(broker.url, root=root) as client:
            wait_answering(client, ["d0", "d1"])
            futures = {}
            second = None
            for n in range(tasks):
                futures[f"d-{n}"] = client.send("sha256", MEDIUM, weight="medium", task_id=f"d-{n}")
                if n == tasks // 4:
                    second = agents.start("d0", broker.url, root, "--concurrency", "2", name="d0-other-host")
                    started = time.monotonic()
                time.sleep(0.01)
            assert second is not None
            try:
                code = second.wait(30)
                run.recover_s = round(time.monotonic() - started, 1)
            except Exception:
                code = None
            settle(futures, 60)
            tally(run, counter, client, futures)
            log = agents.log("d0-other-host")
            run.details["exit_code"] = code
            run.details["said"] = next((line for line in log.splitlines() if "already online" in line), "")
            run.note = f"second d0 exited {code}"
        counter.close()
    return run


def read_only_state_dir(broker_name: str, workdir: Path) -> FaultRun:
    """An agent whose state directory is read-only: one line, exit status 2."""
    import subprocess
    import sys
    run = FaultRun("the agent's state directory is read-only", broker_name)
    with site(broker_name, workdir) as (broker, _agents, root), \
            mounted_tmpfs(workdir / "ro", size_kb=64, read_only=True) as ro:
        import os
        done = subprocess.run([sys.executable, "-m", "fogmesh", "agent", "--id", "ro-1", "--broker", broker.url,
                               "--root", root], env={**os.environ, "FOGMESH_STATE_DIR": str(ro)},
                              capture_output=True, text=True, timeout=60)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        run.details = {"exit_code": done.returncode, "stderr": lines, "dir": str(ro)}
        run.note = lines[-1] if lines else ""
    return run


def reused_task_id(broker_name: str, workdir: Path) -> FaultRun:
    """A device (plain paho, no fogmesh code) submits an id, gets its reply,
    then submits the same id again, as firmware whose counter restarted does.
    One agent: under shared subscriptions an id is known to the agent that
    answered it (a resubmission marked ``attempt`` >= 2 is checked with every
    agent; topics.md)."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    run = FaultRun("a device reuses a task id", broker_name)
    with site(broker_name, workdir) as (broker, agents, root):
        agents.start("u0", broker.url, root)
        counter = ReplyCounter(broker.host, broker.port, root)
        from fogmesh.devices.client import FogClient
        with FogClient(broker.url, root=root) as client:
            wait_answering(client, ["u0"])
        got = threading.Semaphore(0)
        dev = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fw-{uuid.uuid4().hex[:6]}")
        dev.on_message = lambda *a: got.release()
        dev.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/replies/fw", 1)
        dev.connect(broker.host, broker.port)
        dev.loop_start()
        time.sleep(0.5)
        ids = [f"fw-{n:04d}" for n in range(20)]
        for tid in ids + ids:                     # counter back at 1: the same ids again
            body = json.dumps({"id": tid, "kind": "sha256", "args": {"data": tid, "rounds": 500},
                               "reply_to": f"{root}/replies/fw"})
            dev.publish(f"{root}/tasks", body, qos=1)
            got.acquire(timeout=10)
        time.sleep(1.0)
        dev.loop_stop()
        dev.disconnect()
        counter.count(run, {tid: 2 for tid in ids})
        run.details["answers"] = {tid: len(counter.replies.get(tid, ())) for tid in ids[:3]}
        counter.close()
    return run


def dead_letter_time(broker_name: str, workdir: Path) -> FaultRun:
    """Garbage on the task topic: one dead letter, stamped with Unix time."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from fogmesh import codec
    run = FaultRun("dead letters carry Unix time", broker_name)
    with site(broker_name, workdir) as (broker, agents, root):
        agents.start("e0", broker.url, root)
        from fogmesh.devices.client import FogClient
        with FogClient(broker.url, root=root) as client:
            wait_answering(client, ["e0"])
        letters: list[dict[str, Any]] = []
        seen = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"{root}/errors", 1)
        c.on_message = lambda cl, u, m: (letters.append(codec.decode(m.payload)), seen.set())
        c.connect(broker.host, broker.port)
        c.loop_start()
        time.sleep(0.5)
        sent_at = time.time()
        c.publish(f"{root}/tasks", b"{not json", qos=1)
        seen.wait(10)
        time.sleep(0.5)
        c.loop_stop()
        c.disconnect()
        run.submitted = 1
        run.answered = len(letters)
        run.lost = 0 if letters else 1
        run.duplicate_replies = max(0, len(letters) - 1)
        run.details = {"ts": letters[0]["ts"] if letters else None, "sent_at": sent_at}
        if letters:
            run.note = f"ts {letters[0]['ts']:.1f}, published at {sent_at:.1f}"
    return run


def bridge_disk_full(broker_name: str, workdir: Path, *, tasks: int = 150) -> FaultRun:
    """The cloud is down and the bridge's outbox disk fills up: what it cannot
    store goes back to the fog, what it stored reaches the cloud once it is back."""
    import os
    import subprocess
    import sys

    from fogmesh.devices.client import FogClient
    run = FaultRun("the bridge's outbox disk fills while the cloud is down", broker_name)
    cloud = BrokerProcess("mosquitto", workdir / "cloud")
    with site(broker_name, workdir) as (edge, agents, root), \
            mounted_tmpfs(workdir / "outbox-disk", size_kb=1024) as disk:
        cloud_root = f"cloud/{root.rsplit('/', 1)[1]}"
        agents.start("b0", edge.url, root, "--concurrency", "2")
        log = open(workdir / "bridge.log", "ab")
        bridge = subprocess.Popen([sys.executable, "-m", "fogmesh", "bridge", "--site", "farm", "--edge", edge.url,
                                   "--cloud", cloud.url, "--root", root, "--cloud-root", cloud_root,
                                   "--store", str(disk / "outbox.db"), "--log-level", "INFO"],
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=log)
        worker = None
        try:
            counter = ReplyCounter(edge.host, edge.port, root)
            health = f"{root}/bridge/farm"
            with FogClient(edge.url, root=root) as client:
                wait_answering(client, ["b0"])
                _wait_retained(edge, health, lambda h: h.get("state") == "online", 20)
                time.sleep(1.0)                      # the agent sees the bridge too
                filler = fill(disk, leave_bytes=200_000)
                futures = {f"h-{n}": client.send("sha256", {"data": "h" * 1500, "rounds": 200}, weight="heavy",
                                                 task_id=f"h-{n}") for n in range(tasks)}
                degraded = _wait_retained(edge, health, lambda h: h.get("state") == "degraded", 30)
                run.details["health"] = {k: degraded.get(k) for k in ("state", "reason", "backlog")} \
                    if degraded else None
                fog = settled_count(futures, quiet_s=2.0, timeout=60)   # the fog has answered what it got
                filler.unlink()
                cloud.start()                         # the cloud is back: the stored tasks go up
                back = time.monotonic()
                worker = subprocess.Popen([sys.executable, "-m", "fogmesh", "cloud-worker", "--cloud", cloud.url,
                                           "--cloud-root", cloud_root, "--id", "w1", "--log-level", "WARNING"],
                                          env={**os.environ, "FOGMESH_STATE_DIR": str(workdir / "w1")},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                last = last_answer(futures)
                settle(futures, 90)
                run.recover_s = round(last[0] - back, 1) if last[0] > back else 0.0
                tally(run, counter, client, futures)
                tiers: dict[str, int] = {}
                for f in futures.values():
                    if f.done():
                        tiers[f.result().tier] = tiers.get(f.result().tier, 0) + 1
                run.details["tiers"] = tiers
                run.note = f"{fog} answered in the fog during the outage; tiers {tiers}"
            counter.close()
        finally:
            stop_processes([bridge, worker])
            log.close()
            cloud.close()
    return run


def claims_on_a_cluster(broker_name: str, workdir: Path, *, tasks: int = 200) -> FaultRun:
    """A 2-node RabbitMQ cluster, an agent on each node: claims reach them in
    different orders, so the second refuses claim dispatch (exit 2) and the
    first answers everything, once."""
    import subprocess
    import threading

    from fogmesh.broker.rabbitmq import RabbitMQ
    from fogmesh.devices.client import FogClient
    run = FaultRun("agents on two nodes of a RabbitMQ cluster", "rabbitmq x2")
    nodes = [RabbitMQ(workdir=workdir / f"node{i}", name=f"fogmesh{i}") for i in (1, 2)]
    agents = Agents(workdir)
    try:
        starting = [threading.Thread(target=n.start) for n in nodes]
        for t in starting:
            t.start()
        for t in starting:
            t.join()
        nodes[1].join(nodes[0])
        root = f"faults/{uuid.uuid4().hex[:8]}"
        agents.start("q1", nodes[0].url, root, "--concurrency", "2")
        counter = ReplyCounter(nodes[0].host, nodes[0].port, root)
        with FogClient(nodes[0].url, root=root) as client:
            wait_answering(client, ["q1"])
            second = agents.start("q2", nodes[1].url, root, "--concurrency", "2")
            started = time.monotonic()
            futures = {}
            for n in range(tasks):
                futures[f"q-{n}"] = client.send("sha256", MEDIUM, weight="medium", task_id=f"q-{n}")
                time.sleep(0.01)
            try:
                code = second.wait(60)
                run.recover_s = round(time.monotonic() - started, 1)
            except subprocess.TimeoutExpired:
                code = None
                run.note = "q2 did not leave within 60 s"
            settle(futures, 60)
            tally(run, counter, client, futures)
        counter.close()
        run.details["exit_code"] = code
        run.details["said"] = next((line for line in agents.log("q2").splitlines() if "different orders" in line), "")
        run.note = f"q2 exited {code}"
    finally:
        agents.close()
        for n in nodes:
            n.cleanup()
    return run


def _wait_retained(broker: BrokerProcess, topic: str, ok: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _retained(broker, topic, timeout=1.0)
        if got is not None and ok(got):
            return got
        time.sleep(0.3)
    return None


def _retained(broker: BrokerProcess, topic: str, timeout: float = 3.0) -> dict[str, Any] | None:
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


SCENARIOS: dict[str, tuple[Callable[..., FaultRun], tuple[str, ...], dict[str, Any]]] = {
    "agent-kill": (agent_sigkill, ("mosquitto", "amqtt", "aedes"), {}),
    "broker-term": (broker_restart, ("mosquitto", "amqtt"), {"kill": False}),
    "broker-kill": (broker_restart, ("mosquitto", "amqtt"), {"kill": True}),
    "broker-term-once": (broker_restart_once, ("mosquitto", "amqtt"), {"kill": False}),
    "broker-kill-once": (broker_restart_once, ("mosquitto", "amqtt"), {"kill": True}),
    "journal-full": (journal_disk_full, ("mosquitto", "amqtt"), {}),
    "lone-journal-full-once": (lone_agent_disk_full_once, ("mosquitto", "amqtt"), {}),
    "duplicate-id": (duplicate_agent_id, ("mosquitto", "amqtt"), {}),
    "bridge-full": (bridge_disk_full, ("mosquitto", "amqtt"), {}),
    "cluster": (claims_on_a_cluster, ("rabbitmq",), {}),
    "read-only-state": (read_only_state_dir, ("mosquitto",), {}),
    "reused-id": (reused_task_id, ("mosquitto", "amqtt"), {}),
    "dead-letter": (dead_letter_time, ("mosquitto", "amqtt"), {}),
    "power-cut": (power_cut, ("mosquitto", "amqtt"), {}),
    "cluster-node-kill": (cluster_node_kill, ("rabbitmq",), {}),
}


def run_all(names: list[str], brokers: list[str],
            overrides: dict[str, dict[str, Any]] | None = None) -> list[FaultRun]:
    rows = []
    for name in names:
        fn, supported, options = SCENARIOS[name]
        options = {**options, **(overrides or {}).get(name, {})}
        for b in supported:
            if b not in brokers:
                continue
            progress(f"{name} on {b}")
            with tempfile.TemporaryDirectory(prefix="fogmesh-faults-") as tmp:
                rows.append(fn(b, Path(tmp), **options))
            progress(f"  {table([rows[-1]]).splitlines()[-1]}")
    return rows


def table(rows: list[FaultRun]) -> str:
    wide = max([54, *(len(r.fault) for r in rows)])      # the longest fault's name sets the column
    head = f"{'fault':{wide}} {'broker':9} {'submitted':>9} {'answered':>8} {'lost':>5} {'run twice':>9} " \
           f"{'dup replies':>11} {'recover s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rec = "-" if r.recover_s is None else f"{r.recover_s:.1f}"
        lines.append(f"{r.fault:{wide}} {r.broker:9} {r.submitted:9d} {r.answered:8d} {r.lost:5d} "
                     f"{r.run_twice:9d} {r.duplicate_replies:11d} {rec:>9}")
    return "\n".join(lines)


def random_rows(args: argparse.Namespace) -> list[FaultRun]:
    """``--random N`` / ``--seed S``: seeded random schedules on mosquitto (as shipped)."""
    from fogmesh.bench.random_faults import random_schedule_run
    seeds = list(args.seed) + list(range(args.first_seed, args.first_seed + args.random))
    rows = []
    for seed in seeds:
        progress(f"random schedule, seed {seed}")
        with tempfile.TemporaryDirectory(prefix="fogmesh-faults-") as tmp:
            rows.append(random_schedule_run("mosquitto", Path(tmp), seed=seed, duration_s=args.duration))
        progress(f"  {table([rows[-1]]).splitlines()[-1]}")
        if not rows[-1].ok:
            progress(f"  seed {seed} FAILED; replay with: fogmesh bench faults --seed {seed} --duration "
                     f"{args.duration:g}")
    return rows


def main(args: argparse.Namespace) -> int:
    if getattr(args, "random", 0) or getattr(args, "seed", []):
        rows = random_rows(args)
        print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table(rows))
        failed = [r.details["seed"] for r in rows if not r.ok]
        if failed and not args.json:
            print(f"failed seeds: {', '.join(map(str, failed))} (replay: fogmesh bench faults --seed S)")
        return 1 if failed else 0
    names = [n.strip() for n in args.faults.split(",") if n.strip()] if args.faults else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        print(f"fogmesh bench faults: unknown fault(s) {', '.join(sorted(unknown))}; "
              f"known: {', '.join(SCENARIOS)}")
        return 2
    rows = run_all(names, [b.strip() for b in args.brokers.split(",")],
                   {"power-cut": {"down_s": 60.0 * getattr(args, "down_minutes", 1.0)}})
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(table(rows))
    return 0 if all(r.ok for r in rows) else 1
