"""The agent's keeper of its container kinds' containers (the shell: a
thread that ticks; what to remove when is :class:`fogmesh.service_lifecycle.Keeping`'s
and :func:`~fogmesh.service_lifecycle.idle_due`'s to say).

At start it removes what an agent killed outright left (its service
containers and its labelled per-task containers); every ``every_s`` it
stops a service idle for ``idle_s`` (never under a running task: the
handler's lock says); it stops a service whose kind is gone (a deployment
removed or replaced it); and, when the agent stops, every service and every
per-task container still running (a worker stopped with the agent leaves
its ``run`` behind).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from fogmesh.container_engine import ContainerEngine
from fogmesh.container_services import ServiceHandler
from fogmesh.containers import ImageHandler, remove_task_containers
from fogmesh.registry import Registry
from fogmesh.service_lifecycle import Keeping, Removal

__all__ = ["ServiceKeeper"]

log = logging.getLogger(__name__)

Owner = tuple[ContainerEngine, str]          # an engine, and the agent whose per-task containers carry its label


class ServiceKeeper:
    """Keeps the service containers of ``registry``'s kinds (and removes the
    per-task containers its kinds label). ``clock``: wall time, against the
    handlers' stamps of use."""

    def __init__(self, registry: Registry, *, idle_s: float = 60.0, every_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle_s, self.every_s, self.clock = idle_s, every_s, clock
        self._keeping: Keeping[ServiceHandler, Owner] = Keeping(_services_of(registry), _task_owners_of(registry))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._thread: threading.Thread | None = None

    @property
    def handlers(self) -> list[ServiceHandler]:
        with self._lock:
            return list(self._keeping.services)

    def start(self) -> None:
        with self._lock:
            everything = self._keeping.everything()
        self._remove(everything)          # left by an agent killed outright
        self._started = True
        self._watch()

    def _watch(self) -> None:
        """The idle watch, once the agent has a service kind (most agents never do)."""
        if self._started and self.handlers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="service-keeper", daemon=True)
            self._thread.start()

    def track(self, registry: Registry) -> None:
        """The agent's kinds changed: services of kinds that are gone stop now."""
        with self._lock:
            gone = self._keeping.track(_services_of(registry), _task_owners_of(registry))
        self._remove(gone)
        self._watch()

    def tick(self, now: float | None = None) -> list[ServiceHandler]:
        """Stop the services idle for ``idle_s`` (at ``now``, the clock's by default): those stopped."""
        now = self.clock() if now is None else now
        stopped = []
        for h in self.handlers:
            try:
                if h.stop_if_idle(self.idle_s, now):
                    log.info("stopped the service container %s: idle for %g s", h.name, self.idle_s)
                    stopped.append(h)
            except Exception:         # one service's trouble never ends the watch of the others
                log.exception("could not stop the idle service container %s", h.name)
        return stopped

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.tick()

    def _remove(self, removal: Removal[ServiceHandler, Owner]) -> None:
        for h in removal.services:
            h.remove()
        for engine, owner in removal.owners:
            remove_task_containers(engine, owner)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        with self._lock:
            everything = self._keeping.everything()
        self._remove(everything)


def _services_of(registry: Registry) -> list[ServiceHandler]:
    return [k.handler for k in registry.kinds.values() if isinstance(k.handler, ServiceHandler)]


def _task_owners_of(registry: Registry) -> set[Owner]:
    """(engine, agent) of the registry's per-task container kinds that label their containers."""
    return {(k.handler.engine, k.handler.owner) for k in registry.kinds.values()
            if isinstance(k.handler, ImageHandler) and k.handler.owner}
