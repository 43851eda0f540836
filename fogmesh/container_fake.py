"""A container engine in memory, for tests (pure): as gpiozero's
MockFactory stands in for pins, :class:`FakeEngine` stands in for podman
or docker behind :class:`fogmesh.container_engine.ContainerEngine`, with a
:class:`FakeClock` that only moves when the code under test waits.

A test adds images and scripts what their containers do with each task:

    clock = FakeClock()
    engine = FakeEngine(clock)
    engine.add_image("sum", task=lambda args: prints(sum(args["values"])))
    engine.add_image("svc", service=lambda args: answer(1) if args else Crash(3), listens_after_s=0.5)

A per-task container ends with an :class:`Exit` (``prints``, ``oom``) or
:class:`Hang`s (killed at the timeout: the clock passes it). A service
container answers each connection with a :class:`Reply` (any bytes:
``answer``, ``refuse``, garbage, a line over the limit), a :class:`Crash`
(it exits: every connection open on it closes without an answer) or a
:class:`Hang` (no answer: the clock passes the connection's timeout). It
listens ``listens_after_s`` after its start, or never (``exits_at_start``,
``start_error``). The behaviour is plain Python, run while the handler waits
for the answer: a test can step anything there (another worker's task, the
keeper's tick), to see what happens mid-task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from fogmesh.container_engine import ContainerState, Exited, RunOutcome, ServiceRun, TaskRun, TimedOut
from fogmesh.errors import ContainerError

__all__ = ["Crash", "Exit", "FakeClock", "FakeContainer", "FakeEngine", "FakeImage", "Hang", "Reply", "answer",
           "oom", "prints", "refuse"]


class FakeClock:
    """Wall and monotonic time in one, moved by ``sleep`` and ``advance`` only."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Exit:
    """How a per-task container ends."""

    code: int = 0
    stdout: bytes = b""
    stderr: str = ""


@dataclass(frozen=True)
class Hang:
    """Never answers."""


@dataclass(frozen=True)
class Reply:
    """A service's bytes on the task's connection, which it then closes."""

    data: bytes


@dataclass(frozen=True)
class Crash:
    """The service exits with ``code`` mid-task (``oom``: the kernel killed it for memory)."""

    code: int = 3
    oom: bool = False


def prints(value: Any) -> Exit:
    """A per-task container that prints ``value`` as JSON and exits 0."""
    return Exit(0, json.dumps(value).encode() + b"\n")


def oom() -> Exit:
    """A per-task container the kernel killed over its memory limit."""
    return Exit(137)


def answer(result: Any) -> Reply:
    return Reply(json.dumps({"result": result}).encode() + b"\n")


def refuse(message: str) -> Reply:
    return Reply(json.dumps({"error": message, "code": "bad_args"}).encode() + b"\n")


TaskStep = Union[Exit, Hang]
ServiceStep = Union[Reply, Crash, Hang]


@dataclass
class FakeImage:
    task: Callable[[Any], TaskStep] | None = None
    service: Callable[[Any], ServiceStep] | None = None
    listens_after_s: float = 0.0          # a slow start
    exits_at_start: int | None = None     # a service that exits before it listens
    start_error: str | None = None        # the engine cannot start it: its error (e.g. rlimits)
    logs: str = ""


@dataclass
class FakeContainer:
    name: str
    image: str
    labels: dict[str, str]
    started_at: float
    running: bool = True
    exit_code: int | None = None
    oom_killed: bool = False
    socket: str | None = None             # the host path its service listens on
    tasks: int = 0                        # tasks it was sent


class FakeEngine:
    """Containers in memory. ``events``: what was done to them, in order
    (``("start", name)``, ``("remove", name)``, ``("run", name)``, ``("pull", ref)``)."""

    def __init__(self, clock: FakeClock | None = None, *, name: str = "podman") -> None:
        self.name = name
        self.clock = clock or FakeClock()
        self.images: dict[str, FakeImage] = {}
        self.containers: dict[str, FakeContainer] = {}
        self.pullable: set[str] = set()
        self.events: list[tuple[str, str]] = []

    # -- what a test sets up and reads --------------------------------------------------------
    def add_image(self, ref: str, **behaviour: Any) -> FakeImage:
        self.images[ref] = image = FakeImage(**behaviour)
        return image

    def leave(self, name: str, *, labels: dict[str, str], image: str = "left-over") -> FakeContainer:
        """A container still running from before (an agent killed outright)."""
        self.containers[name] = c = FakeContainer(name, image, dict(labels), self.clock.monotonic())
        return c

    def running(self) -> list[str]:
        return sorted(n for n, c in self.containers.items() if c.running)

    def count(self, event: str, name: str) -> int:
        return self.events.count((event, name))

    def _image(self, ref: str) -> FakeImage:
        image = self.images.get(ref)
        if image is None:
            raise ContainerError(f"{self.name} run failed (125): Error: {ref}: image not known")
        return image

    # -- ContainerEngine ------------------------------------------------------------------------
    def run_task(self, run: TaskRun, *, stdin: bytes, timeout_s: float) -> RunOutcome:
        self.events.append(("run", run.name))
        image = self.images.get(run.image)
        if image is None:
            return Exited(125, stderr=f"Error: {run.image}: image not known\n")
        if image.start_error is not None:
            return Exited(126, stderr=image.start_error)
        self.containers[run.name] = c = FakeContainer(run.name, run.image, dict(run.labels), self.clock.monotonic())
        try:
            if image.task is None:
                return Exited(127, stderr="Error: the fake image has no task behaviour\n")
            c.tasks += 1
            step = image.task(json.loads(stdin))
            if isinstance(step, Hang):
                self.clock.sleep(timeout_s)
                return TimedOut(timeout_s)
            return Exited(step.code, step.stdout, step.stderr)
        finally:
            self.containers.pop(run.name, None)           # --rm

    def start_service(self, run: ServiceRun, *, timeout_s: float) -> None:
        if run.name in self.containers:
            raise ContainerError(f"{self.name} run failed (125): Error: the container name \"{run.name}\" is "
                                 "already in use")
        image = self._image(run.image)
        if image.start_error is not None:
            raise ContainerError(f"{self.name} run failed (126): {image.start_error}")
        self.events.append(("start", run.name))
        c = FakeContainer(run.name, run.image, dict(run.labels), self.clock.monotonic(), socket=_host_socket(run))
        if image.exits_at_start is not None:
            c.running, c.exit_code = False, image.exits_at_start
        self.containers[run.name] = c

    def state(self, name: str) -> ContainerState | None:
        c = self.containers.get(name)
        return None if c is None else ContainerState(c.running, c.exit_code, c.oom_killed)

    def logs(self, name: str, *, tail: int) -> str:
        c = self.containers.get(name)
        if c is None or c.image not in self.images:
            return ""
        return " | ".join(self.images[c.image].logs.strip().splitlines()[-tail:])

    def remove(self, *names: str, grace_s: int = 2) -> None:
        for name in names:
            if self.containers.pop(name, None) is not None:
                self.events.append(("remove", name))

    def labelled(self, label: str, value: str) -> list[str]:
        return sorted(n for n, c in self.containers.items() if c.running and c.labels.get(label) == value)

    def pull(self, ref: str, *, timeout_s: float) -> None:
        if ref not in self.pullable:
            raise ContainerError(f"{self.name} pull failed (125): Error: initializing source docker://{ref}: "
                                 "manifest unknown")
        self.events.append(("pull", ref))
        self.images.setdefault(ref, FakeImage())

    def connect(self, socket_path: str, *, timeout_s: float) -> FakeChannel:
        for c in self.containers.values():
            if c.socket == socket_path and c.running and \
                    self.clock.monotonic() >= c.started_at + self.images[c.image].listens_after_s:
                return FakeChannel(self, c, timeout_s)
        raise ConnectionRefusedError(111, "Connection refused")


@dataclass
class FakeChannel:
    """One connection to a fake service: its behaviour runs at the first ``recv``."""

    engine: FakeEngine
    container: FakeContainer
    timeout_s: float
    sent: bytearray = field(default_factory=bytearray)
    _out: bytes | None = None
    _at: int = 0                                  # how much of _out was received

    def _alive(self) -> bool:
        return self.engine.containers.get(self.container.name) is self.container and self.container.running

    def send(self, data: bytes) -> None:
        if not self._alive():
            raise BrokenPipeError(32, "Broken pipe")
        self.sent += data

    def recv(self, most: int) -> bytes:
        if self._out is None:
            self._out = self._serve()
        if not self._alive():
            return b""                            # it died (or was removed): the connection closes
        chunk = self._out[self._at:self._at + most]
        self._at += len(chunk)
        return chunk

    def _serve(self) -> bytes:
        behaviour = self.engine.images[self.container.image].service
        if behaviour is None:
            return b""
        self.container.tasks += 1
        step = behaviour(json.loads(bytes(self.sent).split(b"\n", 1)[0]))
        if isinstance(step, Hang):
            self.engine.clock.sleep(self.timeout_s)
            raise TimeoutError("timed out")
        if isinstance(step, Crash):
            self.container.running, self.container.exit_code = False, step.code
            self.container.oom_killed = step.oom
            return b""
        return step.data

    def close(self) -> None:
        pass


def _host_socket(run: ServiceRun) -> str | None:
    """Where on the host the service's ``$FOGMESH_SOCKET`` is (through its mounts)."""
    inside = dict(run.env).get("FOGMESH_SOCKET")
    if inside is None:
        return None
    for host, target in run.mounts:
        if inside.startswith(target.rstrip("/") + "/"):
            return host.rstrip("/") + inside[len(target.rstrip("/")):]
    return None
