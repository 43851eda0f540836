"""The real container engine: podman or docker through its CLI (the one
module that runs it), as :class:`fogmesh.container_engine.ContainerEngine`.

Why the CLI and not an API: podman and docker take the same ``run``
arguments, the CLI is what every box with an engine has, and it needs no
socket or daemon permission set up. Every command runs from a scratch or
temporary directory, never the caller's: conmon writes a file ``oom`` into
the engine's working directory when the kernel kills a container for memory
(and a service container's conmon outlives the command).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from fogmesh import service_socket
from fogmesh.container_engine import (
    STATE_FORMAT,
    ContainerState,
    Exited,
    NotStarted,
    RunOutcome,
    ServiceRun,
    TaskRun,
    TimedOut,
    parse_state,
)
from fogmesh.errors import ContainerError

__all__ = ["Engine", "limit_args"]


def limit_args(*, memory: str | None, cpus: str | None) -> list[str]:
    """A kind's limits as ``run`` options (per-task and service containers alike)."""
    return (["--memory", memory] if memory else []) + (["--cpus", cpus] if cpus else [])


def _labels(labels: Sequence[tuple[str, str]]) -> list[str]:
    return [a for key, value in labels for a in ("--label", f"{key}={value}")]


@dataclass(frozen=True)
class Engine:
    """A container engine on this box (picklable: it travels to the agent's
    workers inside each container kind's handler)."""

    name: str        # podman | docker
    path: str
    # The engine's configuration file ($CONTAINERS_CONF) as the agent saw it when it made
    # the kind: worker processes may come from a fork server started before it was set.
    conf: str | None = None

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None) -> Engine | None:
        """podman, else docker, if one runs here (``FOGMESH_CONTAINER_ENGINE`` picks one)."""
        env = os.environ if env is None else env
        wanted = env.get("FOGMESH_CONTAINER_ENGINE")
        for name in ([wanted] if wanted else ["podman", "docker"]):
            path = shutil.which(name)
            if path is None:
                continue
            try:
                ok = subprocess.run([path, "version"], capture_output=True, timeout=10, check=False).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                return cls(name, path)
        return None

    def seen_now(self) -> Engine:
        """This engine with ``$CONTAINERS_CONF`` as it is now."""
        return replace(self, conf=os.environ.get("CONTAINERS_CONF"))

    # -- the one way a command runs ----------------------------------------------------------
    def _call(self, args: Sequence[str], *, timeout: float, stdin: bytes | None = None,
              cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "CONTAINERS_CONF": self.conf} if self.conf else None
        return subprocess.run([self.path, *args], input=stdin, capture_output=True, timeout=timeout, check=False,
                              env=env, cwd=cwd or tempfile.gettempdir())

    def command(self, args: Sequence[str], *, timeout: float = 60.0, stderr_too: bool = False) -> str:
        """One engine command: its stdout, or :class:`ContainerError` saying what failed."""
        try:
            done = self._call(args, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ContainerError(f"{self.name} {args[0]} did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise ContainerError(f"cannot run {self.path}: {exc}") from exc
        out = done.stdout.decode(errors="replace") + (done.stderr.decode(errors="replace") if stderr_too else "")
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ContainerError(f"{self.name} {args[0]} failed ({done.returncode}): {err[0][:300]}")
        return out

    # -- ContainerEngine ------------------------------------------------------------------------
    def run_task(self, run: TaskRun, *, stdin: bytes, timeout_s: float) -> RunOutcome:
        argv = ["run", "--rm", "-i", "--name", run.name, "--network", "none", *_labels(run.labels),
                *limit_args(memory=run.memory, cpus=run.cpus), run.image, *run.command]
        try:
            with tempfile.TemporaryDirectory(prefix="fogmesh-run-") as scratch:
                done = self._call(argv, timeout=timeout_s, stdin=stdin, cwd=scratch)
        except subprocess.TimeoutExpired:
            try:
                self._call(["kill", run.name], timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            return TimedOut(timeout_s)
        except OSError as exc:
            return NotStarted(str(exc))
        return Exited(done.returncode, done.stdout, done.stderr.decode(errors="replace"))

    def start_service(self, run: ServiceRun, *, timeout_s: float) -> None:
        argv = ["run", "-d", "--name", run.name, *_labels(run.labels), "--network", "none",
                *(a for host, inside in run.mounts for a in ("-v", f"{host}:{inside}")),
                *(a for key, value in run.env for a in ("-e", f"{key}={value}")),
                *limit_args(memory=run.memory, cpus=run.cpus), run.image, *run.command]
        self.command(argv, timeout=timeout_s)

    def state(self, name: str) -> ContainerState | None:
        try:
            return parse_state(self.command(["inspect", "--format", STATE_FORMAT, name], timeout=30))
        except ContainerError:
            return None

    def logs(self, name: str, *, tail: int) -> str:
        try:
            out = self.command(["logs", "--tail", str(tail), name], timeout=30, stderr_too=True)
        except ContainerError:
            return ""
        return out.strip().replace("\n", " | ")[-300:]

    def remove(self, *names: str, grace_s: int = 2) -> None:
        if names:
            try:
                self.command(["rm", "-f", "-t", str(grace_s), *names], timeout=60 * len(names))
            except ContainerError:
                pass

    def labelled(self, label: str, value: str) -> list[str]:
        try:
            return self.command(["ps", "-q", "--filter", f"label={label}={value}"], timeout=60).split()
        except ContainerError:
            return []

    def pull(self, ref: str, *, timeout_s: float) -> None:
        self.command(["pull", "-q", ref], timeout=timeout_s)

    def connect(self, socket_path: str, *, timeout_s: float) -> service_socket.UnixChannel:
        return service_socket.connect(socket_path, timeout_s=timeout_s)

    # -- for fogmesh doctor -------------------------------------------------------------------
    def images(self) -> list[tuple[str, str]]:
        """The images on this box as ``(REPOSITORY:TAG, size)``; [] when the engine cannot list them."""
        try:
            out = self.command(["images", "--format", "{{.Repository}}:{{.Tag}}\t{{.Size}}"], timeout=60)
        except ContainerError:
            return []
        return [(name, size) for name, _, size in (line.partition("\t") for line in out.splitlines()) if name]

    def try_start(self, image: str, *, limits: bool = False, timeout: float = 60.0) -> str | None:
        """Start one container of ``image`` (its ``true``, no network, never a
        pull) and remove it, as a kind's container starts: None if it ran, else
        the engine's error output (for :func:`fogmesh.container_diagnosis.diagnose`).
        ``limits``: with a memory and CPU limit, as a kind with ``memory=``/``cpus=``."""
        name = f"fogmesh-doctor-{uuid.uuid4().hex[:8]}"
        argv = ["run", "--rm", "--name", name, "--network", "none", "--pull", "never",
                *(limit_args(memory="64m", cpus="0.5") if limits else []), "--entrypoint", "true", image]
        try:
            done = self._call(argv, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.remove(name, grace_s=10)
            return f"Error: no container started within {timeout:g} s"
        except OSError as exc:
            return f"Error: cannot run {self.path}: {exc}"
        if done.returncode == 0:
            return None
        return (done.stderr.decode(errors="replace") or done.stdout.decode(errors="replace")
                or f"Error: exit status {done.returncode}")
