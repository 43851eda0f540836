"""The container engine as container kinds see it: one small protocol,
:class:`ContainerEngine`, and the values it takes and gives (pure).

Two engines implement it: :class:`fogmesh.engine_cli.Engine`, podman or
docker through their CLI (the one module that runs them), and
:class:`fogmesh.container_fake.FakeEngine`, containers in memory whose
behaviour a test scripts (a crash, a hang, an OOM kill, a garbage reply, a
slow start), as gpiozero's MockFactory stands in for pins. The kinds'
handlers (:mod:`fogmesh.containers`, :mod:`fogmesh.container_services`) and
the agent's keeper of service containers talk to the protocol only.

What it asks of an engine: run a container for one task and say how it
ended (:data:`RunOutcome`); start a long-running service container; the
state of a container; its last log lines; remove containers; list the
running ones carrying a label; pull an image; and open the channel to a
service container's socket (a file in a directory the container mounts:
the engine made it reachable, so the engine is asked for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

__all__ = ["Channel", "ContainerEngine", "ContainerState", "Exited", "NotStarted", "RunOutcome", "ServiceRun",
           "TaskRun", "TimedOut", "parse_state"]


@dataclass(frozen=True)
class TaskRun:
    """One container for one task (``run --rm -i``, no network): the task's
    args on its stdin, its result on its stdout."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    memory: str | None = None        # e.g. "256m"
    cpus: str | None = None          # e.g. "0.5"


@dataclass(frozen=True)
class ServiceRun:
    """One long-running container (``run -d``, no network), a host directory
    mounted in it (``mounts``: (host, container) pairs) and its environment."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    memory: str | None = None
    cpus: str | None = None
    mounts: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Exited:
    """The container ran and exited with ``code`` (or the engine failed to
    start it: 125-127, its error on stderr)."""

    code: int
    stdout: bytes = b""
    stderr: str = ""


@dataclass(frozen=True)
class TimedOut:
    """No exit within ``after_s``: the container was killed."""

    after_s: float


@dataclass(frozen=True)
class NotStarted:
    """The engine itself could not be run (its program is gone, ...)."""

    reason: str


RunOutcome = Union[Exited, TimedOut, NotStarted]


@dataclass(frozen=True)
class ContainerState:
    """What ``inspect`` says of a container."""

    running: bool
    exit_code: int | None = None
    oom_killed: bool = False


#: ``inspect --format``'s template for :func:`parse_state`.
STATE_FORMAT = "{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}}"


def parse_state(text: str) -> ContainerState | None:
    """``inspect --format STATE_FORMAT``'s output read; None if it is not that."""
    words = text.split()
    if len(words) != 3 or words[0] not in ("true", "false"):
        return None
    try:
        code = int(words[1])
    except ValueError:
        return None
    return ContainerState(running=words[0] == "true", exit_code=code, oom_killed=words[2] == "true")


class Channel(Protocol):
    """One connection to a service container's socket. ``recv`` returns b""
    when the service closed it, raises TimeoutError when nothing came within
    the connection's timeout and OSError when it broke."""

    def send(self, data: bytes) -> None: ...

    def recv(self, most: int) -> bytes: ...

    def close(self) -> None: ...


class ContainerEngine(Protocol):
    """A container engine. Failures it cannot put in a return value raise
    :class:`fogmesh.errors.ContainerError` saying what failed."""

    @property
    def name(self) -> str:
        """podman | docker (how its error messages read)."""
        ...

    def run_task(self, run: TaskRun, *, stdin: bytes, timeout_s: float) -> RunOutcome:
        """Run ``run`` with ``stdin``; its exit, or TimedOut (then it was killed)."""
        ...

    def start_service(self, run: ServiceRun, *, timeout_s: float) -> None:
        """Start ``run`` detached; ContainerError if the engine refused."""
        ...

    def state(self, name: str) -> ContainerState | None:
        """The container's state; None if there is no such container."""
        ...

    def logs(self, name: str, *, tail: int) -> str:
        """Its last ``tail`` lines of output, one line; "" if none can be read."""
        ...

    def remove(self, *names: str, grace_s: int = 2) -> None:
        """Remove them, running or not (never raises: what cannot be removed is left)."""
        ...

    def labelled(self, label: str, value: str) -> list[str]:
        """The running containers carrying ``label=value``; [] if the engine cannot say."""
        ...

    def pull(self, ref: str, *, timeout_s: float) -> None:
        """``ref`` on this box; ContainerError if it cannot be pulled."""
        ...

    def connect(self, socket_path: str, *, timeout_s: float) -> Channel:
        """A channel to the service listening on ``socket_path`` (a host path);
        OSError when none listens there."""
        ...
