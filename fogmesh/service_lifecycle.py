"""When a service container starts, is stopped or removed, and what its
tasks get when it fails (pure: the shell, :mod:`fogmesh.container_services`
and :mod:`fogmesh.service_keeper`, reads the engine, the socket, the lock
files and the clock, and asks these).

The life of one service container:

* **start**: a task finds nothing listening on the socket. Under the start
  lock it looks again (another worker may have started it meanwhile), then
  removes whatever container has the name (one that crashed), starts one,
  and waits (:class:`StartWait`) until it listens: failed when the
  container exits first, or at the start timeout (then it is removed, and
  its last log lines go into the task's error).
* **serve**: one connection per task. No answer within the kind's timeout:
  the service is hung, it is removed (:func:`after_silence`); the tasks it
  was serving at that moment lose their connection (each a
  ``handler_error``) and the next task starts a fresh one. A service that
  dies mid-task closes its connections: each such task is a
  ``handler_error`` saying how it ended (:func:`exit_note`), and the next
  task starts a fresh one.
* **idle**: unused for ``--service-idle`` seconds (:func:`idle_due`) and no
  task running (the shell holds that as a lock): stopped.
* **the agent**: at start it removes what an agent killed outright left
  (services and per-task containers), on stop the same, and when its kinds
  change, the services of kinds that are gone (:class:`Keeping`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Hashable, Iterable, Protocol, TypeVar

from fogmesh.container_engine import ContainerState
from fogmesh.container_exits import OOM_KILLED

__all__ = ["POLL_S", "Clock", "Keeping", "Removal", "Start", "StartWait", "after_drop", "after_silence", "exit_note",
           "idle_due", "start_failed"]

#: How often the shell looks whether a starting service listens yet.
POLL_S = 0.05


class Clock(Protocol):
    """The shell's clock: wall time (the lock files' stamps), a monotonic
    one (deadlines), and a pause between two looks (a test's advances it)."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class Start(Enum):
    READY = "ready"          # it listens: send the task
    WAIT = "wait"            # it runs and does not listen yet: look again in POLL_S
    FAILED = "failed"        # it exited, or the start timeout passed: remove it, fail the task


@dataclass
class StartWait:
    """Waiting for a service container that was just started to listen."""

    deadline: float

    @classmethod
    def begin(cls, now: float, *, timeout_s: float) -> StartWait:
        return cls(now + timeout_s)

    def step(self, *, listening: bool, running: bool, now: float) -> Start:
        """What to do now: ``listening``, its socket took a connection;
        ``running``, the engine says the container runs."""
        if listening:
            return Start.READY
        if not running or now >= self.deadline:
            return Start.FAILED
        return Start.WAIT


def start_failed(image: str, *, timeout_s: float, logs: str) -> str:
    """The task's error when its service never listened."""
    return (f"service container of {image} did not listen on $FOGMESH_SOCKET within {timeout_s:g} s"
            f"{': ' + logs if logs else ''}")


@dataclass(frozen=True)
class Verdict:
    """After a failed exchange: remove the service? and the task's error."""

    remove: bool
    message: str


def after_silence(image: str, *, timeout_s: float) -> Verdict:
    """No answer within the kind's timeout: hung; removed, the next task starts a fresh one."""
    return Verdict(True, f"service container of {image} did not answer within {timeout_s:g} s; removed")


def after_drop(image: str, *, error: str) -> Verdict:
    """The connection broke mid-task: this task fails; the service is kept
    (the next task finds it, or starts a fresh one if it died)."""
    return Verdict(False, f"service container of {image} dropped the task: {error}")


def exit_note(state: ContainerState | None, *, memory: str | None) -> str:
    """How a container that closed a task's connection ended, for its error
    (`` (it exited with 3)``); "" when it still runs or is gone."""
    if state is None or state.running:
        return ""
    if state.oom_killed or (state.exit_code == OOM_KILLED and memory):
        limit = f" the kind's limit is {memory}" if memory else ""
        return f" (it exited with {state.exit_code}: out of memory?{limit})"
    return f" (it exited with {state.exit_code})"


def idle_due(*, used_at: float | None, now: float, idle_s: float) -> bool:
    """Stop the service? ``used_at``: when a task last began on it (None:
    none since it was last removed, nothing to stop). The shell stops it
    only if, besides, no task runs on it (it holds the lock that says so)."""
    return used_at is not None and now - used_at >= idle_s


S = TypeVar("S", bound=Hashable)
W = TypeVar("W", bound=Hashable)


@dataclass(frozen=True)
class Removal(Generic[S, W]):
    """Containers to remove: these services, and the per-task containers of these owners."""

    services: tuple[S, ...] = ()
    owners: tuple[W, ...] = ()


@dataclass
class Keeping(Generic[S, W]):
    """The agent's service kinds (``services``) and who labels per-task
    containers (``owners``): what to remove when."""

    services: list[S] = field(default_factory=list)
    owners: set[W] = field(default_factory=set)

    def everything(self) -> Removal[S, W]:
        """At start (what an agent killed outright left) and at stop."""
        return Removal(tuple(self.services), tuple(sorted(self.owners, key=repr)))

    def track(self, services: Iterable[S], owners: Iterable[W]) -> Removal[S, W]:
        """The kinds changed: the services of kinds that are gone go now;
        owners are kept (a worker of an old kind may still run a container)."""
        new = list(services)
        gone = tuple(s for s in self.services if s not in new)
        self.services = new
        self.owners |= set(owners)
        return Removal(gone)
