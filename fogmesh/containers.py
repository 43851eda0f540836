"""Task kinds backed by a container image, run once per task (Con-Pi's
dockerStart/dockerStop, one task at a time).

A task's args go to the container as JSON on stdin; its result is the JSON
the container prints on stdout. The container is started with ``--rm -i``,
a name of its own, and the kind's memory and CPU limits, and killed at the
kind's timeout; a crash, a hang or output that is not JSON becomes a clear
error for the task, never for the agent. The handler is thin: the engine
(:class:`fogmesh.container_engine.ContainerEngine`; the real one,
:class:`fogmesh.engine_cli.Engine`) runs the container, and
:func:`fogmesh.container_exits.task_result` reads how it ended.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fogmesh.container_engine import ContainerEngine, TaskRun
from fogmesh.container_exits import task_result
from fogmesh.engine_cli import Engine, limit_args
from fogmesh.errors import ContainerError
from fogmesh.registry import TaskKind

__all__ = ["ContainerError", "Engine", "ImageHandler", "image_kind", "limit_args", "local_images",
           "parse_image_kind", "remove_task_containers", "seen_now", "try_start"]


TASK_LABEL = "fogmesh.task-of"


def seen_now(engine: ContainerEngine) -> ContainerEngine:
    """``engine`` as a kind made now keeps it: the real one with
    ``$CONTAINERS_CONF`` as it is now (the agent's workers may have another)."""
    return engine.seen_now() if isinstance(engine, Engine) else engine


def try_start(engine: Engine, image: str, *, limits: bool = False, timeout: float = 60.0) -> str | None:
    """:meth:`fogmesh.engine_cli.Engine.try_start` (``fogmesh doctor``)."""
    return engine.try_start(image, limits=limits, timeout=timeout)


def local_images(engine: Engine) -> list[tuple[str, str]]:
    """The images on this box as ``(REPOSITORY:TAG, size)``; [] when the engine cannot list them."""
    return engine.images()


@dataclass(frozen=True)
class ImageHandler:
    """Runs one task in a fresh container of ``image`` (picklable: it travels
    to the agent's worker with each job, ``TaskKind.ships_handler``)."""

    engine: ContainerEngine
    image: str
    command: tuple[str, ...] = ()
    timeout_s: float = 30.0
    memory: str | None = None        # e.g. "256m"
    cpus: str | None = None          # e.g. "0.5"
    owner: str | None = None         # the agent: its containers carry the label fogmesh.task-of=owner

    def __call__(self, args: Mapping[str, Any], cache: dict[Any, Any] | None = None) -> Any:
        run = TaskRun(name=f"fogmesh-task-{uuid.uuid4().hex[:12]}", image=self.image, command=self.command,
                      labels=((TASK_LABEL, self.owner),) if self.owner else (), memory=self.memory, cpus=self.cpus)
        outcome = self.engine.run_task(run, stdin=json.dumps(dict(args)).encode(), timeout_s=self.timeout_s)
        return task_result(outcome, image=self.image, engine=self.engine.name, memory=self.memory,
                           timeout_s=self.timeout_s)


def remove_task_containers(engine: ContainerEngine, owner: str) -> int:
    """Remove the per-task containers ``owner`` (an agent) left running: its
    workers are gone (stopped, or the agent was killed), and a container
    whose ``run`` lost its parent would run on. How many."""
    ids = engine.labelled(TASK_LABEL, owner)
    engine.remove(*ids, grace_s=1)
    return len(ids)


def image_kind(name: str, image: str, *, engine: ContainerEngine, command: Sequence[str] = (),
               weight: str = "medium", timeout_s: float = 30.0, memory: str | None = None, cpus: str | None = None,
               owner: str | None = None) -> TaskKind:
    """A kind whose handler runs ``image`` once per task. The run's own
    timeout is the kind's plus the engine's start-up (the worker pool kills
    the worker at the kind's timeout; the handler kills the container)."""
    handler = ImageHandler(seen_now(engine), image, tuple(command), timeout_s, memory, cpus, owner=owner)
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
