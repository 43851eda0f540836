"""Task kinds backed by a long-running service container (Con-Pi's
dockerStart/dockerStop on the chosen node): started when the agent is sent
work of the kind, stopped when it has been idle a while, when the agent
stops, and (left over from an agent killed outright) when it starts again
(the agent's :class:`fogmesh.service_keeper.ServiceKeeper`).

Why a service and not a container per task: a model or a connection pool
loads once, and a task costs a round trip on a local socket instead of a
container start (``fogmesh bench containers`` shows both).

The protocol, for whoever writes the image: listen on the Unix socket named
by ``$FOGMESH_SOCKET`` (a directory the agent mounts at ``/run/fogmesh``),
take any number of connections at once; on each, one line of JSON (the
task's args) in, one line of JSON out (:mod:`fogmesh.container_protocol`).

This module is the shell: it holds the lock files, the connection and the
clock; what to do is decided in :mod:`fogmesh.service_lifecycle`, what a
reply means in :mod:`fogmesh.container_protocol`, and the engine is any
:class:`fogmesh.container_engine.ContainerEngine`. Several worker processes
share one container: they coordinate through lock files in the socket's
directory (a shared lock while a task talks to the service, an exclusive one
to start it; the keeper stops an idle service only when it can take the
exclusive one, so never under a running task).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from fogmesh.container_engine import Channel, ContainerEngine, ServiceRun
from fogmesh.container_protocol import Closed, ReplyReader, decode_reply, encode_request, reply_result
from fogmesh.containers import seen_now
from fogmesh.errors import ContainerError
from fogmesh.registry import TaskKind
from fogmesh.service_lifecycle import (
    POLL_S,
    Clock,
    Start,
    StartWait,
    after_drop,
    after_silence,
    exit_note,
    idle_due,
    start_failed,
)

__all__ = ["ServiceHandler", "SystemClock", "service_kind"]

SOCKET = "service.sock"
MOUNT = "/run/fogmesh"
LABEL = "fogmesh.service-of"
BUSY, START, USED = "busy", "start", "used"        # the lock files, and the stamp of the last task begun
CHUNK = 65536


class SystemClock:
    """The real clock (picklable: it travels with the handler)."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Hold ``path``'s lock in ``mode``; yields False if LOCK_NB was asked and it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, mode)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ServiceHandler:
    """Sends one task to the kind's service container, starting it if needed
    (picklable: it travels to the agent's workers with each job)."""

    engine: ContainerEngine
    image: str
    name: str                       # the container's name: fogmesh-svc-{agent}-{kind}
    directory: str                  # mounted at /run/fogmesh: the socket and the lock files
    agent: str
    command: tuple[str, ...] = ()
    timeout_s: float = 30.0
    memory: str | None = None
    cpus: str | None = None
    start_timeout_s: float = 60.0
    clock: Clock = field(default_factory=SystemClock, compare=False, repr=False)

    @property
    def _dir(self) -> Path:
        return Path(self.directory)

    def __call__(self, args: Mapping[str, Any], cache: dict[Any, Any] | None = None) -> Any:
        with _flock(self._dir / BUSY, fcntl.LOCK_SH):
            used = self._dir / USED
            used.touch()
            now = self.clock.time()
            os.utime(used, (now, now))
            try:
                conn = self._connect()
            except OSError:
                self._start()
                try:
                    conn = self._connect()
                except OSError as exc:
                    raise ContainerError(after_drop(self.image, error=str(exc)).message) from exc
            try:
                return self._talk(conn, args)
            finally:
                conn.close()

    # -- in the worker -----------------------------------------------------------------
    def _connect(self) -> Channel:
        return self.engine.connect(str(self._dir / SOCKET), timeout_s=self.timeout_s)

    def _listening(self) -> bool:
        try:
            self._connect().close()
        except OSError:
            return False
        return True

    def _running(self) -> bool:
        state = self.engine.state(self.name)
        return state is not None and state.running

    def _run(self) -> ServiceRun:
        return ServiceRun(name=self.name, image=self.image, command=self.command, labels=((LABEL, self.agent),),
                          memory=self.memory, cpus=self.cpus, mounts=((self.directory, MOUNT),),
                          env=(("FOGMESH_SOCKET", f"{MOUNT}/{SOCKET}"),))

    def _start(self) -> None:
        with _flock(self._dir / START, fcntl.LOCK_EX):
            if self._listening():
                return                                  # another worker started it meanwhile
            self._remove_container()
            self.engine.start_service(self._run(), timeout_s=self.start_timeout_s)
            wait = StartWait.begin(self.clock.monotonic(), timeout_s=self.start_timeout_s)
            while True:
                listening = self._listening()
                step = wait.step(listening=listening, running=listening or self._running(),
                                 now=self.clock.monotonic())
                if step is Start.READY:
                    return
                if step is Start.FAILED:
                    break
                self.clock.sleep(POLL_S)                # the service is starting; nothing to await but a poll
            logs = self.engine.logs(self.name, tail=3)
            self._remove_container()
            raise ContainerError(start_failed(self.image, timeout_s=self.start_timeout_s, logs=logs))

    def _talk(self, conn: Channel, args: Mapping[str, Any]) -> Any:
        reader = ReplyReader()
        try:
            conn.send(encode_request(args))
            while not reader.feed(conn.recv(CHUNK)):
                pass
        except TimeoutError:
            verdict = after_silence(self.image, timeout_s=self.timeout_s)
        except OSError as exc:
            verdict = after_drop(self.image, error=str(exc))
        else:
            reply = decode_reply(reader)
            note = exit_note(self.engine.state(self.name), memory=self.memory) if isinstance(reply, Closed) else ""
            return reply_result(reply, image=self.image, exit_note=note)
        if verdict.remove:
            self._remove_container()                    # hung: the next task starts a fresh one
        raise ContainerError(verdict.message)

    # -- in the agent (and the worker) ----------------------------------------------------
    def _remove_container(self) -> None:
        self.engine.remove(self.name, grace_s=2)
        (self._dir / SOCKET).unlink(missing_ok=True)

    def _used_at(self) -> float | None:
        try:
            return (self._dir / USED).stat().st_mtime
        except OSError:
            return None

    def remove(self) -> None:
        """Remove the container (running or not), its socket and its stamp of use."""
        self._remove_container()
        (self._dir / USED).unlink(missing_ok=True)

    def stop_if_idle(self, idle_s: float, now: float | None = None) -> bool:
        """Stop the service if no task used it for ``idle_s`` and none runs now."""
        now = self.clock.time() if now is None else now
        if not idle_due(used_at=self._used_at(), now=now, idle_s=idle_s):
            return False
        with _flock(self._dir / BUSY, fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
            # looked at again under the lock: a task may have begun and ended meanwhile
            if not free or not idle_due(used_at=self._used_at(), now=now, idle_s=idle_s):
                return False
            self.remove()
            return True


def service_kind(name: str, image: str, *, engine: ContainerEngine, agent: str,
                 state_dir: str | Path | None = None, command: Sequence[str] = (), weight: str = "medium",
                 timeout_s: float = 30.0, memory: str | None = None, cpus: str | None = None,
                 instance: str | None = None, clock: Clock | None = None) -> TaskKind:
    """A kind whose tasks go to a service container of ``image`` (started on
    demand; the agent's :class:`~fogmesh.service_keeper.ServiceKeeper` stops
    it). ``instance`` tells apart the containers of two versions of the kind
    (a deployment's digest)."""
    tag = f"{agent}-{name}" + (f"-{instance}" if instance else "")
    directory = _socket_dir(state_dir, tag)
    handler = ServiceHandler(seen_now(engine), image, name=f"fogmesh-svc-{tag}", directory=str(directory),
                             agent=agent, command=tuple(command), timeout_s=timeout_s, memory=memory, cpus=cpus,
                             clock=clock or SystemClock())
    return TaskKind(name=name, handler=handler, weight=weight, timeout_s=timeout_s + handler.start_timeout_s,
                    description=f"service container {image}", ships_handler=True)


def _socket_dir(state_dir: str | Path | None, tag: str) -> Path:
    """Where the service's socket lives: under the state directory, unless
    that path is too long for a Unix socket (108 bytes)."""
    base = Path(state_dir) if state_dir else Path(tempfile.gettempdir())
    directory = base / "services" / tag
    if len(str(directory / SOCKET)) > 100:
        directory = Path(tempfile.gettempdir()) / f"fogmesh-svc-{tag}"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
