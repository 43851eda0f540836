"""Fault scenarios: disks that fill up or cannot be written, and a RabbitMQ
cluster that reorders claims."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fogmesh.bench.faultkit import (
    Agents,
    BrokerProcess,
    FaultRun,
    FirmwareDevice,
    ReplyCounter,
    fill,
    mounted_tmpfs,
    wait_answering,
)
from fogmesh.bench.faultsteps import (
    MEDIUM,
    last_answer,
    ready_client,
    retained,
    settle,
    settled_count,
    site,
    tally,
    tally_once,
    wait_retained,
)
from fogmesh.broker.processes import stop_processes


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
            presence = retained(broker, f"{root}/presence/j0")
            log = agents.log("j0")
            run.details["presence"] = {k: presence.get(k) for k in ("state", "reason")} if presence else None
            run.details["error_logged"] = " ERROR " in log and ("No space left" in log or "disk full" in log)
            filler.unlink()
            freed = time.monotonic()
            while time.monotonic() - freed < 20:
                p = retained(broker, f"{root}/presence/j0")
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
            presence = retained(broker, f"{root}/presence/l0")
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
            back = wait_retained(broker, f"{root}/presence/l0", lambda p: p.get("state") == "online", 20)
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
                wait_retained(edge, health, lambda h: h.get("state") == "online", 20)
                time.sleep(1.0)                      # the agent sees the bridge too
                filler = fill(disk, leave_bytes=200_000)
                futures = {f"h-{n}": client.send("sha256", {"data": "h" * 1500, "rounds": 200}, weight="heavy",
                                                 task_id=f"h-{n}") for n in range(tasks)}
                degraded = wait_retained(edge, health, lambda h: h.get("state") == "degraded", 30)
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


def claims_on_a_cluster(broker_name: str, workdir: Path, *, tasks: int = 200,
                        nodes: list[Any] | None = None) -> FaultRun:
    """A 2-node RabbitMQ cluster, an agent on each node: claims reach them in
    different orders, so the second refuses claim dispatch (exit 2) and the
    first answers everything, once. ``nodes``: two nodes of a running
    cluster to use (left running); else a cluster of two is started here."""
    import subprocess
    import threading

    from fogmesh.broker.rabbitmq import RabbitMQ
    from fogmesh.devices.client import FogClient
    run = FaultRun("agents on two nodes of a RabbitMQ cluster", "rabbitmq x2")
    own = nodes is None
    if nodes is None:
        nodes = [RabbitMQ(workdir=workdir / f"node{i}", name=f"fogmesh{i}") for i in (1, 2)]
    agents = Agents(workdir)
    try:
        if own:
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
        if own:
            for n in nodes:
                n.cleanup()
    return run
