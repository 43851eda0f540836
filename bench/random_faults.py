"""``fogmesh bench faults --random N``: seeded random fault schedules
(:mod:`fogmesh.bench.schedules`) on a running site.

Three agents (CLI processes) and mosquitto as shipped (persistence with
``autosave_interval 30``), a device that publishes each task once beside a
:class:`~fogmesh.devices.client.FogClient` that sends again after 8 s without
a reply, and a plain subscriber counting replies. Agents are SIGKILLed,
SIGTERMed (and started again) or SIGSTOPped (and continued); the broker is
SIGKILLed or SIGTERMed and started again on its port. Every row names its
seed: ``--seed S`` replays it.

What must hold: no task runs twice (two different answers for one id), the
FogClient's tasks are all answered, and every fire-and-forget task the broker
took is answered unless the broker itself lost it (a SIGKILL between two
autosaves: the agents' journals tell, ``dropped_by_broker``)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from fogmesh.bench.faultkit import (
    Agents,
    BrokerProcess,
    FaultRun,
    FirmwareDevice,
    ReplyCounter,
    answered_in_journals,
    progress,
    wait_answering,
)
from fogmesh.bench.schedules import Fault, random_schedule

MEDIUM = {"data": "fog", "rounds": 3000}
AGENTS = ("s0", "s1", "s2")


class _Site:
    """The broker and agents a schedule acts on."""

    def __init__(self, broker: BrokerProcess, agents: Agents, root: str) -> None:
        self.broker, self.agents, self.root = broker, agents, root

    def start_agent(self, name: str) -> None:
        self.agents.start(name, self.broker.url, self.root, "--concurrency", "2")

    def do(self, fault: Fault) -> None:
        if fault.target == "broker":
            self.broker.kill() if fault.action == "kill" else self.broker.stop()
            return
        proc = self.agents.procs[fault.target]
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stop": signal.SIGSTOP}[fault.action]
        proc.send_signal(sig)
        if fault.action != "stop":
            try:
                proc.wait(15)
            except Exception:            # a SIGTERM that did not end it: end it
                proc.kill()
                proc.wait()

    def undo(self, fault: Fault) -> None:
        if fault.target == "broker":
            self.broker.start()
        elif fault.action == "stop":
            self.agents.procs[fault.target].send_signal(signal.SIGCONT)
        else:
            self.start_agent(fault.target)


def _play(site: _Site, schedule: list[Fault], started: float, stop: threading.Event) -> None:
    """Carry out ``schedule`` against the clock (``started``: its time 0),
    each target on its own thread: an agent that takes seconds to stop after
    its SIGTERM (finishing what it holds) must not push the broker's next
    fault later (on a loaded box, into the schedule's quiet end)."""
    players = [threading.Thread(target=_play_target, args=(site, [f for f in schedule if f.target == t],
                                                            started, stop), daemon=True)
               for t in sorted({f.target for f in schedule})]
    for p in players:
        p.start()
    for p in players:
        p.join()


def _play_target(site: _Site, faults: list[Fault], started: float, stop: threading.Event) -> None:
    steps = sorted([(f.at, 0, f) for f in faults] + [(f.back_at, 1, f) for f in faults],
                   key=lambda s: (s[0], s[1]))
    for at, undo, fault in steps:
        if stop.wait(max(0.0, started + at - time.monotonic())):
            return
        progress(f"  {time.monotonic() - started:6.1f} s: {'undo' if undo else 'do'} {fault.describe()}")
        site.undo(fault) if undo else site.do(fault)


def random_schedule_run(broker_name: str, workdir: Path, *, seed: int, duration_s: float = 90.0,
                        rate: float = 20.0, autosave_s: int = 30, mean_gap_s: float = 6.0) -> FaultRun:
    """One seeded schedule of ``duration_s`` under ``rate`` tasks a second."""
    from fogmesh.devices.client import FogClient

    schedule = random_schedule(seed, duration_s=duration_s, agents=AGENTS, mean_gap_s=mean_gap_s)
    run = FaultRun(f"random schedule, seed {seed} ({len(schedule)} faults in {duration_s:g} s)", broker_name)
    run.details["seed"] = seed
    run.details["schedule"] = [f.describe() for f in schedule]
    broker = BrokerProcess(broker_name, workdir, autosave_s=autosave_s).start()
    agents = Agents(workdir)
    root = f"faults/rand-{seed}-{int(time.time() * 1000) % 10**6}"
    site = _Site(broker, agents, root)
    counter: ReplyCounter | None = None
    device: FirmwareDevice | None = None
    stop = threading.Event()
    player: threading.Thread | None = None
    try:
        for a in AGENTS:
            site.start_agent(a)
        counter = ReplyCounter(broker.host, broker.port, root)
        with FogClient(broker.url, root=root, retry_s=8.0) as client:
            wait_answering(client, list(AGENTS))
            device = FirmwareDevice(broker.host, broker.port, root, reconnect_s=(0.2, 1.0))
            futures: dict[str, Any] = {}
            started = time.monotonic()
            player = threading.Thread(target=_play, args=(site, schedule, started, stop), daemon=True)
            player.start()
            n = 0
            while time.monotonic() - started < duration_s:
                n += 1
                tid = f"r-{n}"
                if n % 4 == 0:
                    futures[tid] = client.send("sha256", MEDIUM, weight="medium", task_id=tid)
                else:
                    device.send(tid, "sha256", MEDIUM, weight="medium")
                time.sleep(max(0.0, started + n / rate - time.monotonic()))   # the devices' pace
            player.join()
            _settle(counter, device, client, futures)
            run.died = [f"{name} (exit status {proc.returncode})" for name, proc in agents.procs.items()
                        if proc.poll() is not None]
            for name in run.died:
                run.details.setdefault("died_logs", {})[name] = agents.log(name.split()[0]).splitlines()[-5:]
            sends = {tid: 1 for tid in device.accepted}
            sends.update({tid: client.attempts(tid) for tid in futures})
            counter.count(run, sends)
            run.details["fogclient_unanswered"] = sorted(t for t, f in futures.items() if not f.done())[:20]
            missing = [tid for tid in device.accepted if not counter.replies.get(tid)]
    finally:
        stop.set()
        if player is not None:
            player.join(30)
        for part in (device, counter):
            if part is not None:
                part.close()
        agents.close()
        broker.close()
    answered = answered_in_journals(workdir)
    run.details["answered_and_lost"] = sorted(set(missing) & answered)[:20]
    dropped = sorted(set(missing) - answered, key=lambda t: int(t.split("-")[1]))
    run.details["dropped_by_broker"] = len(dropped)
    if dropped:     # when they were sent: seconds into the schedule, first and last
        run.details["dropped_sent_s"] = [round(int(dropped[0].split("-")[1]) / rate, 1),
                                         round(int(dropped[-1].split("-")[1]) / rate, 1)]
    # Lost: what fogmesh lost. A task the broker took and then forgot in a
    # SIGKILL before its autosave never reached an agent: the broker's loss.
    run.lost = len(run.details["fogclient_unanswered"]) + len(run.details["answered_and_lost"])
    saves = "at every change" if autosave_s == 0 else f"every {autosave_s} s"
    run.note = (f"seed {seed}; {run.details['dropped_by_broker']} dropped by the broker in a SIGKILL "
                f"(it saves {saves})" + (f"; agents that ended on their own: {', '.join(run.died)}"
                                                 if run.died else ""))
    return run


def _settle(counter: ReplyCounter, device: FirmwareDevice, client: Any, futures: dict[str, Any],
            *, quiet_s: float = 12.0, timeout: float = 150.0) -> None:
    """Until everything is answered, or nothing new came for ``quiet_s``
    (longer than the FogClient's re-send)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = sum(1 for f in futures.values() if f.done())
        got = sum(1 for tid in device.accepted if counter.replies.get(tid))
        if done == len(futures) and got == len(device.accepted):
            break
        if done + got != last:
            last, since = done + got, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.2)
    time.sleep(2.0)                     # room for a late second answer: an absence cannot be awaited
