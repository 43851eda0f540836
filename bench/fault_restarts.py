"""Fault scenarios: agents and brokers that die or restart, and ids used
twice (an agent's, a task's); garbage on the task topic."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fogmesh.bench.faultkit import (
    AgentSilent,
    FaultRun,
    FirmwareDevice,
    ReplyCounter,
    progress,
    wait_answering,
)
from fogmesh.bench.faultsteps import (
    MEDIUM,
    MIX,
    journals_say,
    last_answer,
    ready_client,
    settle,
    site,
    tally,
    tally_once,
)


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
