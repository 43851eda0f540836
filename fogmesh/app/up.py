"""``fogmesh up``: the whole system on one machine, in one command.

Embedded broker, N agents, a short mixed workload, a table of where each task
ran and how long it took, then the sensing -> analysis -> actuation loop: a
simulated camera, a pipeline on agent-1 and a relay on gpiozero's mock pins.
Everything is in this process (agents' handlers in their worker processes), so
Ctrl-C tears all of it down.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
from typing import Any

DEMO_WORKLOAD: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"hello": "fog"}),
    ("sum", {"values": [1, 2, 3, 4]}),
    ("stats", {"values": [20.5, 21.0, 22.4, 19.8]}),
    ("sha256", {"size": 1_000_000, "rounds": 3}),
    ("sleep", {"ms": 50}),
    ("echo", {"reading": 42}),
]


def _demo_pipeline() -> Any:
    from fogmesh.edge_agent.pipelines import Actuation, PipelineSpec, Rule
    return PipelineSpec(name="deterrent", device="farm-cam", sensor="camera", kind="motion",
                        when=Rule("moving"), then=Actuation("farm-relay", "deterrent", "pulse", 500),
                        args={"min_area": 200}, cooldown_ms=1000)


class Interrupts:
    """Ctrl-C noted by a handler that only sets a flag, and raised as
    KeyboardInterrupt where the demo looks (between answers): Python's default
    raises it wherever the main thread happens to be, and a run interrupted
    inside a library's lock handling once finished as if nothing happened."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda *_: self.asked.set())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def check(self) -> None:
        if self.asked.is_set():
            raise KeyboardInterrupt

    def result(self, future: Any, timeout: float) -> Any:
        """``future.result(timeout)``, looking for Ctrl-C ten times a second."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                return future.result(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise


def demo_loop(url: str, root: str, agent: Any, out: Any, *, timeout: float = 20.0,
              interrupts: Interrupts | None = None) -> bool:
    """Camera frames -> ``motion`` -> a relay pulse, printed as it happens."""
    from fogmesh.devices.actuator import ActuatorDevice
    from fogmesh.devices.gpio import make_pin_factory, parse_pins
    from fogmesh.devices.scenes import GeneratedScene
    from fogmesh.devices.streams import CameraDevice
    factory = make_pin_factory("mock")
    print("\nsensing -> analysis -> actuation: camera farm-cam (a figure walking, 4 frames/s) -> "
          f"pipeline on {agent.agent_id} (motion) -> relay farm-relay/deterrent (mock GPIO17)", file=out)
    relay = ActuatorDevice(url, device="farm-relay", root=root, pin_factory=factory,
                           specs=parse_pins("deterrent=relay:17")).start()
    camera = CameraDevice(url, device="farm-cam", root=root, fps=4,
                          source=GeneratedScene(people=1, speed=10, seed=1)).start()
    try:
        deadline = time.monotonic() + timeout
        while relay.commands == 0 and time.monotonic() < deadline:
            if interrupts is not None:
                interrupts.check()
            time.sleep(0.05)
        stats = agent.pipelines.cores["deterrent"].stats
        if relay.commands == 0:
            print(f"no pulse within {timeout:g} s ({stats.to_dict()})", file=out)
            return False
        print(f"relay pulsed: GPIO17 {'high' if factory.pin(17).state else 'low'}, "
              f"{stats.last_latency_ms:.0f} ms from frame capture to command; "
              f"{stats.frames} frames seen, {stats.processed} analysed", file=out, flush=True)
        return True
    finally:
        camera.stop()
        relay.stop()


def run_demo(*, agents: int = 3, tasks: int = 12, port: int = 0, root: str = "fog/v1",
             out: Any = sys.stdout) -> int:
    from fogmesh.broker.embedded import EmbeddedBroker
    from fogmesh.broker.ports import free_port
    from fogmesh.devices.client import FogClient
    from fogmesh.edge_agent.agent import Agent
    from fogmesh.edge_agent.options import AgentOptions
    from fogmesh.edge_agent.placement import LeastLoadedPolicy

    port = port or free_port()
    started = []
    # A demo's agents keep no journal across runs: the task ids repeat (demo-1...),
    # and a journal's memory of "demo-4 answered" would swallow the next run's.
    state = tempfile.TemporaryDirectory(prefix="fogmesh-up-")
    broker = EmbeddedBroker(port=port)
    interrupts = Interrupts().__enter__()
    try:
        broker.start()
        print(f"broker   embedded amqtt on {broker.url}", file=out, flush=True)
        for i in range(agents):
            agent = Agent(f"agent-{i + 1}", broker.url, AgentOptions(
                root=root, concurrency=2, presence_period=2.0, policy=LeastLoadedPolicy(),
                pipelines=[_demo_pipeline()] if i == 0 else None, state_dir=state.name))
            agent.start()
            started.append(agent)
            print(f"agent    {agent.agent_id} online (dispatch: {agent.dispatch})", file=out, flush=True)
        with FogClient(broker.url, root=root, device="demo") as client:
            print(f"\nsubmitting {tasks} tasks to {client.topics.tasks}; replies on {client.reply_to}\n",
                  file=out, flush=True)
            futures = []
            for n in range(tasks):
                kind, args = DEMO_WORKLOAD[n % len(DEMO_WORKLOAD)]
                futures.append((f"demo-{n + 1}", kind, client.send(kind, args, task_id=f"demo-{n + 1}")))
                interrupts.check()
            print(f"{'task':<9} {'kind':<7} {'status':<7} {'worker':<9} {'tier':<6} "
                  f"{'queue ms':>9} {'run ms':>9} {'round trip ms':>14}", file=out)
            ok = 0
            for task_id, kind, fut in futures:
                r = interrupts.result(fut, 30)
                ok += r.ok
                print(f"{task_id:<9} {kind:<7} {r.reply.status:<7} {r.worker:<9} {r.tier:<6} "
                      f"{r.ms.queue:>9.1f} {r.ms.run:>9.1f} {r.latency_ms:>14.1f}", file=out, flush=True)
            by_worker: dict[str, int] = {}
            for _, _, fut in futures:
                w = fut.result().worker
                by_worker[w] = by_worker.get(w, 0) + 1
            spread = ", ".join(f"{w}: {n}" for w, n in sorted(by_worker.items()))
            print(f"\n{ok}/{tasks} ok; tasks per agent: {spread}", file=out)
        loop_ok = demo_loop(broker.url, root, started[0], out, interrupts=interrupts) if started else True
        print("\ntry it by hand: fogmesh broker, fogmesh agent --id a1, fogmesh submit echo "
              "--args '{\"hi\": 1}'", file=out)
        return 0 if ok == tasks and loop_ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted; shutting down", file=out)
        return 130
    finally:
        interrupts.__exit__()
        for agent in started:
            agent.stop(timeout=5)
        broker.stop()
        state.cleanup()
        time.sleep(0.05)
