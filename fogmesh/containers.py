"""Task kinds backed by a container image, run once per task (the one module
that drives a container engine: podman or docker, through their CLI).

A task's args go to the container as JSON on stdin; its result is the JSON
the container prints on stdout. The container is started with ``--rm -i``,
a name of its own, and the kind's memory and CPU limits, and killed at the
kind's timeout; a crash, a hang or output that is not JSON becomes a clear
error for the task, never for the agent (Con-Pi's dockerStart/dockerStop,
one task at a time).

Why the CLI and not an API: podman and docker take the same ``run``
arguments, the CLI is what every box with an engine has, and it needs no
socket or daemon permission set up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from fogmesh.container_diagnosis import diagnose
from fogmesh.errors import BadArgs, FogmeshError
from fogmesh.registry import TaskKind

__all__ = ["ContainerError", "Engine", "ImageHandler", "engine_run", "image_kind", "limit_args", "local_images",
           "parse_image_kind", "remove_task_containers", "try_start"]


TASK_LABEL = "fogmesh.task-of"
#: ``run``'s own exit statuses: the engine failed (125), the command could not be started (126, 127).
ENGINE_FAILED = (125, 126, 127)


class ContainerError(FogmeshError, RuntimeError):
    """A container kind's container failed: it crashed, hung or printed no JSON."""


@dataclass(frozen=True)
class Engine:
    """A container engine on this box."""

    name: str        # podman | docker
    path: str

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


def engine_run(engine: str, args: Sequence[str], *, conf: str | None = None, timeout: float = 60.0,
               stderr_too: bool = False) -> str:
    """One engine command (``engine`` is its path); its stdout, or
    :class:`ContainerError` saying what failed."""
    env = {**os.environ, "CONTAINERS_CONF": conf} if conf else None
    try:
        # Not the caller's working directory: conmon writes "oom" there for a container killed
        # for memory (a service container's conmon outlives this call: a lasting directory).
        done = subprocess.run([engine, *args], capture_output=True, timeout=timeout, check=False, env=env,
                              cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        raise ContainerError(f"{Path(engine).name} {args[0]} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise ContainerError(f"cannot run {engine}: {exc}") from exc
    out = done.stdout.decode(errors="replace") + (done.stderr.decode(errors="replace") if stderr_too else "")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise ContainerError(f"{Path(engine).name} {args[0]} failed ({done.returncode}): {err[0][:300]}")
    return out


def try_start(engine: Engine, image: str, *, limits: bool = False, timeout: float = 60.0) -> str | None:
    """Start one container of ``image`` (its ``true``, no network, never a
    pull) and remove it, as a kind's container starts: None if it ran, else
    the engine's error output (for :func:`fogmesh.container_diagnosis.diagnose`).
    ``limits``: with a memory and CPU limit, as a kind with ``memory=``/``cpus=``."""
    name = f"fogmesh-doctor-{uuid.uuid4().hex[:8]}"
    argv = [engine.path, "run", "--rm", "--name", name, "--network", "none", "--pull", "never",
            *(limit_args(memory="64m", cpus="0.5") if limits else []), "--entrypoint", "true", image]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        subprocess.run([engine.path, "rm", "-f", name], capture_output=True, timeout=60, check=False)
        return f"Error: no container started within {timeout:g} s"
    except OSError as exc:
        return f"Error: cannot run {engine.path}: {exc}"
    if done.returncode == 0:
        return None
    return (done.stderr.decode(errors="replace") or done.stdout.decode(errors="replace")
            or f"Error: exit status {done.returncode}")


def local_images(engine: Engine) -> list[tuple[str, str]]:
    """The images on this box as ``(REPOSITORY:TAG, size)``; [] when the engine cannot list them."""
    try:
        out = engine_run(engine.path, ["images", "--format", "{{.Repository}}:{{.Tag}}\t{{.Size}}"], timeout=60)
    except ContainerError:
        return []
    return [(name, size) for name, _, size in (line.partition("\t") for line in out.splitlines()) if name]


def limit_args(*, memory: str | None, cpus: str | None) -> list[str]:
    """A kind's limits as ``run`` options (per-task and service containers alike)."""
    return (["--memory", memory] if memory else []) + (["--cpus", cpus] if cpus else [])


@dataclass(frozen=True)
class ImageHandler:
    """Runs one task in a fresh container of ``image`` (picklable: it travels
    to the agent's worker with each job, ``TaskKind.ships_handler``)."""

    engine: str
    image: str
    command: tuple[str, ...] = ()
    timeout_s: float = 30.0
    memory: str | None = None        # e.g. "256m"
    cpus: str | None = None          # e.g. "0.5"
    # The engine's configuration file as the agent saw it at start ($CONTAINERS_CONF):
    # worker processes may come from a fork server started before it was set.
    conf: str | None = None
    owner: str | None = None         # the agent: its containers carry the label fogmesh.task-of=owner

    def __call__(self, args: Mapping[str, Any], cache: dict[Any, Any] | None = None) -> Any:
        name = f"fogmesh-task-{uuid.uuid4().hex[:12]}"
        argv = [self.engine, "run", "--rm", "-i", "--name", name, "--network", "none"]
        if self.owner:
            argv += ["--label", f"{TASK_LABEL}={self.owner}"]
        argv += limit_args(memory=self.memory, cpus=self.cpus)
        argv += [self.image, *self.command]
        env = {**os.environ, "CONTAINERS_CONF": self.conf} if self.conf else None
        try:
            # A scratch working directory: conmon writes a file "oom" into the engine's
            # working directory when the kernel kills the container for memory.
            with tempfile.TemporaryDirectory(prefix="fogmesh-run-") as scratch:
                done = subprocess.run(argv, input=json.dumps(dict(args)).encode(), capture_output=True,
                                      timeout=self.timeout_s, check=False, env=env, cwd=scratch)
        except subprocess.TimeoutExpired:
            subprocess.run([self.engine, "kill", name], capture_output=True, timeout=30, check=False, env=env)
            raise ContainerError(f"container of {self.image} did not answer within {self.timeout_s:g} s; "
                                 "killed") from None
        except OSError as exc:
            raise ContainerError(f"cannot start a container of {self.image}: {exc}") from exc
        if done.returncode == 2:
            raise BadArgs(done.stderr.decode(errors="replace").strip()[-300:] or "the container refused the args")
        if done.returncode == 137 and self.memory:
            raise ContainerError(f"container of {self.image} was killed (exit 137): out of memory? the kind's "
                                 f"limit is {self.memory}")
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            tail = stderr.strip().splitlines()[-1:] or [""]
            # the engine's own failure (its "Error: ..." line), not the kind's exit status?
            if done.returncode in ENGINE_FAILED and tail[0].startswith(("Error", "docker:")):
                d = diagnose(Path(self.engine).name, stderr)
                if d.cause not in ("other", "no-command"):
                    raise ContainerError(f"no container of {self.image} could start: {d.reason}; {d.fix}")
            raise ContainerError(f"container of {self.image} exited with {done.returncode}: {tail[0][:300]}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise ContainerError(f"container of {self.image} printed no JSON on stdout: "
                                 f"{done.stdout[:120]!r}") from None


def remove_task_containers(engine: str, owner: str, *, conf: str | None = None) -> int:
    """Remove the per-task containers ``owner`` (an agent) left running: its
    workers are gone (stopped, or the agent was killed), and a container
    whose ``run`` lost its parent would run on. How many."""
    try:
        found = engine_run(engine, ["ps", "-q", "--filter", f"label={TASK_LABEL}={owner}"], conf=conf, timeout=60)
        ids = found.split()
        if ids:
            engine_run(engine, ["rm", "-f", "-t", "1", *ids], conf=conf, timeout=120)
    except ContainerError:
        return 0
    return len(ids)


def image_kind(name: str, image: str, *, engine: Engine, command: Sequence[str] = (), weight: str = "medium",
               timeout_s: float = 30.0, memory: str | None = None, cpus: str | None = None,
               owner: str | None = None) -> TaskKind:
    """A kind whose handler runs ``image`` once per task. The run's own
    timeout is the kind's plus the engine's start-up (the worker pool kills
    the worker at the kind's timeout; the handler kills the container)."""
    handler = ImageHandler(engine.path, image, tuple(command), timeout_s, memory, cpus,
                           conf=os.environ.get("CONTAINERS_CONF"), owner=owner)
    return TaskKind(name=name, handler=handler,
                    weight=weight, timeout_s=timeout_s + 10.0, description=f"container {image}",
                    ships_handler=True)


@dataclass(frozen=True)
class ImageKindSpec:
    """``--image-kind NAME=IMAGE[,memory=256m][,cpus=0.5][,service]``."""

    name: str
    image: str
    memory: str | None = None
    cpus: str | None = None
    service: bool = False


def parse_image_kind(spec: str) -> ImageKindSpec:
    """Read one ``--image-kind``; ValueError saying what is wrong."""
    name, sep, rest = spec.partition("=")
    image, *options = rest.split(",")
    if not sep or not name or not image:
        raise ValueError(f"--image-kind {spec!r}: use NAME=IMAGE[,memory=256m][,cpus=0.5][,service]")
    found: dict[str, Any] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if key == "service" and not eq:
            found["service"] = True
        elif key in ("memory", "cpus") and eq and value:
            found[key] = value
        else:
            raise ValueError(f"--image-kind {spec!r}: unknown option {option!r} (memory=SIZE, cpus=N, service)")
    return ImageKindSpec(name, image, **found)
