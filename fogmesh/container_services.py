"""Task kinds backed by a long-running service container (Con-Pi's
dockerStart/dockerStop on the chosen node): started when the agent is sent
work of the kind, stopped when it has been idle a while, when the agent
stops, and (left over from an agent killed outright) when it starts again.

Why a service and not a container per task: a model or a connection pool
loads once, and a task costs a round trip on a local socket instead of a
container start (``fogmesh bench containers`` shows both).

The protocol, for whoever writes the image: listen on the Unix socket named
by ``$FOGMESH_SOCKET`` (a directory the agent mounts at ``/run/fogmesh``),
take any number of connections at once; on each, one line of JSON (the
task's args) in, one line of JSON out: ``{"result": ...}``, or
``{"error": "...", "code": "bad_args"}`` for args it refuses (``code``
optional: other errors are the kind's failure). A reply that is not that, a
connection closed without one, or none within the kind's timeout is the
task's error (and a hung service is removed; the next task starts a fresh one).

Several worker processes share one container: they coordinate through lock
files in the socket's directory (a shared lock while a task talks to the
service, an exclusive one to start it; the keeper stops an idle service only
when it can take the exclusive one, so never under a running task). The
engine's CLI runs through :func:`fogmesh.containers.engine_run`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from fogmesh.containers import ContainerError, Engine, ImageHandler, engine_run, limit_args, remove_task_containers
from fogmesh.errors import BadArgs
from fogmesh.registry import Registry, TaskKind

__all__ = ["ServiceHandler", "ServiceKeeper", "service_kind"]

log = logging.getLogger(__name__)

SOCKET = "service.sock"
MOUNT = "/run/fogmesh"
LABEL = "fogmesh.service-of"


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Hold ``path``'s lock in ``mode``; yields False if LOCK_NB was asked and it is taken."""
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

    engine: str
    image: str
    name: str                       # the container's name: fogmesh-svc-{agent}-{kind}
    directory: str                  # mounted at /run/fogmesh: the socket and the lock files
    agent: str
    command: tuple[str, ...] = ()
    timeout_s: float = 30.0
    memory: str | None = None
    cpus: str | None = None
    conf: str | None = None         # $CONTAINERS_CONF as the agent saw it
    start_timeout_s: float = 60.0

    @property
    def _dir(self) -> Path:
        return Path(self.directory)

    def __call__(self, args: Mapping[str, Any], cache: dict[Any, Any] | None = None) -> Any:
        with _flock(self._dir / "busy", fcntl.LOCK_SH):
            (self._dir / "used").touch()
            try:
                conn = self._connect()
            except OSError:
                self._start()
                conn = self._connect()
            with conn:
                return self._talk(conn, args)

    # -- in the worker -----------------------------------------------------------------
    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout_s)
        try:
            s.connect(str(self._dir / SOCKET))
        except OSError:
            s.close()
            raise
        return s

    def _start(self) -> None:
        with _flock(self._dir / "start", fcntl.LOCK_EX):
            try:
                self._connect().close()
                return                                  # another worker started it meanwhile
            except OSError:
                pass
            self.remove()
            argv = ["run", "-d", "--name", self.name, "--label", f"{LABEL}={self.agent}", "--network", "none",
                    "-v", f"{self.directory}:{MOUNT}", "-e", f"FOGMESH_SOCKET={MOUNT}/{SOCKET}",
                    *limit_args(memory=self.memory, cpus=self.cpus)]
            engine_run(self.engine, [*argv, self.image, *self.command], conf=self.conf, timeout=self.start_timeout_s)
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline:
                try:
                    self._connect().close()
                    return
                except OSError:
                    if not self._running():
                        break
                    time.sleep(0.05)                    # the service is starting; nothing to await but a poll
            tail = self._logs()
            self.remove()
            raise ContainerError(f"service container of {self.image} did not listen on $FOGMESH_SOCKET within "
                                 f"{self.start_timeout_s:g} s{': ' + tail if tail else ''}")

    def _talk(self, conn: socket.socket, args: Mapping[str, Any]) -> Any:
        try:
            conn.sendall(json.dumps(dict(args)).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            self.remove()                               # hung: the next task starts a fresh one
            raise ContainerError(f"service container of {self.image} did not answer within {self.timeout_s:g} s; "
                                 "removed") from None
        except OSError as exc:
            raise ContainerError(f"service container of {self.image} dropped the task: {exc}") from exc
        if not data.strip():
            raise ContainerError(f"service container of {self.image} closed the connection without an answer"
                                 + self._exit_note())
        try:
            reply = json.loads(data)
        except ValueError:
            raise ContainerError(f"service container of {self.image} answered no JSON: {data[:120]!r}") from None
        if isinstance(reply, dict) and "result" in reply:
            return reply["result"]
        if isinstance(reply, dict) and "error" in reply:
            if reply.get("code") == "bad_args":
                raise BadArgs(str(reply["error"])[:300])
            raise ContainerError(f"service container of {self.image}: {str(reply['error'])[:300]}")
        raise ContainerError(f"service container of {self.image} answered neither result nor error: {data[:120]!r}")

    # -- in the agent (and the worker) ----------------------------------------------------
    def _state(self) -> tuple[bool, str] | None:
        """(running, exit code) of the container; None if there is none."""
        try:
            out = engine_run(self.engine, ["inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}",
                                           self.name], conf=self.conf, timeout=30).split()
        except ContainerError:
            return None
        return (out[0] == "true", out[1]) if len(out) == 2 else None

    def _running(self) -> bool:
        state = self._state()
        return state is not None and state[0]

    def _exit_note(self) -> str:
        """`` (it exited with N)`` for a container that is no longer running."""
        state = self._state()
        return f" (it exited with {state[1]})" if state is not None and not state[0] else ""

    def _logs(self) -> str:
        try:
            return engine_run(self.engine, ["logs", "--tail", "3", self.name], conf=self.conf, timeout=30,
                              stderr_too=True).strip().replace("\n", " | ")[-300:]
        except ContainerError:
            return ""

    def remove(self) -> None:
        """Remove the container (running or not) and its socket."""
        try:
            engine_run(self.engine, ["rm", "-f", "-t", "2", self.name], conf=self.conf, timeout=60)
        except ContainerError:
            pass
        (self._dir / SOCKET).unlink(missing_ok=True)

    def stop_if_idle(self, idle_s: float, now: float | None = None) -> bool:
        """Stop the service if no task used it for ``idle_s`` and none runs now."""
        used = self._dir / "used"
        if not (self._dir / SOCKET).exists() or not used.exists():
            return False
        if (now if now is not None else time.time()) - used.stat().st_mtime < idle_s:
            return False
        with _flock(self._dir / "busy", fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
            if not free:
                return False
            self.remove()
            return True


class ServiceKeeper:
    """The agent's side of its container kinds (those of its registry):
    removes what an agent killed outright left, stops a service idle for
    ``idle_s``, one whose kind is gone (a deployment removed or replaced it),
    and, when the agent stops, every service and every per-task container
    still running (a worker stopped with the agent leaves its ``run`` behind)."""

    def __init__(self, registry: Registry, *, idle_s: float = 60.0, every_s: float = 1.0) -> None:
        self.idle_s, self.every_s = idle_s, every_s
        self.handlers = _services_of(registry)
        self.owners = _task_owners_of(registry)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._remove_all()                # left by an agent killed outright
        self._started = True
        self._watch()

    def _watch(self) -> None:
        """The idle watch, once the agent has a service kind (most agents never do)."""
        if self._started and self.handlers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="service-keeper", daemon=True)
            self._thread.start()

    def track(self, registry: Registry) -> None:
        """The agent's kinds changed: services of kinds that are gone stop now."""
        new = _services_of(registry)
        with self._lock:
            gone, self.handlers = [h for h in self.handlers if h not in new], new
            self.owners |= _task_owners_of(registry)
        for h in gone:
            h.remove()
        self._watch()

    def _remove_all(self) -> None:
        """Every service container, and every per-task container of this agent
        still running (its ``run`` died with a worker the pool stopped)."""
        for h in self.handlers:
            h.remove()
        for engine, owner, conf in self.owners:
            remove_task_containers(engine, owner, conf=conf)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with self._lock:
                handlers = list(self.handlers)
            for h in handlers:
                if h.stop_if_idle(self.idle_s):
                    log.info("stopped the service container %s: idle for %g s", h.name, self.idle_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        self._remove_all()


def _services_of(registry: Registry) -> list[ServiceHandler]:
    return [k.handler for k in registry.kinds.values() if isinstance(k.handler, ServiceHandler)]


def _task_owners_of(registry: Registry) -> set[tuple[str, str, str | None]]:
    """(engine, agent, conf) of the registry's per-task container kinds that label their containers."""
    return {(k.handler.engine, k.handler.owner, k.handler.conf) for k in registry.kinds.values()
            if isinstance(k.handler, ImageHandler) and k.handler.owner}


def service_kind(name: str, image: str, *, engine: Engine, agent: str, state_dir: str | Path | None = None,
                 command: Sequence[str] = (), weight: str = "medium", timeout_s: float = 30.0,
                 memory: str | None = None, cpus: str | None = None, instance: str | None = None) -> TaskKind:
    """A kind whose tasks go to a service container of ``image`` (started on
    demand; the agent's :class:`ServiceKeeper` stops it). ``instance`` tells
    apart the containers of two versions of the kind (a deployment's digest)."""
    tag = f"{agent}-{name}" + (f"-{instance}" if instance else "")
    directory = _socket_dir(state_dir, tag)
    handler = ServiceHandler(engine.path, image, name=f"fogmesh-svc-{tag}", directory=str(directory),
                             agent=agent, command=tuple(command), timeout_s=timeout_s, memory=memory, cpus=cpus,
                             conf=os.environ.get("CONTAINERS_CONF"))
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
