"""Deployed kinds: what the agent registers for a bundle's kinds, and how a
worker loads one from the bundle's environment.

The agent never imports a bundle: its :class:`TaskKind` carries a
:class:`BundleHandler`, a small picklable pointer (environment, kind) whose
call loads the entry point in the worker that runs it. The worker pool was
started before the bundle existed, so the handler travels with each job
(``TaskKind.ships_handler``). The environment's ``lib`` goes at the *end* of
the worker's path: fogmesh's own modules win there, so a bundle cannot
replace a library fogmesh runs on (a bundle needing another version of one
of them must vendor it under another name: README's Deployment section).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path
from typing import Any, Callable, Mapping

from fogmesh.deploy.bundle_file import ENTRY_POINT_GROUP
from fogmesh.deploy.manifest import Manifest
from fogmesh.registry import Registry, TaskKind

__all__ = ["BundleHandler", "bundle_kinds", "load_entry_point"]


def load_entry_point(lib: str, kind: str) -> Callable[[Mapping[str, Any]], Any]:
    """The handler of ``kind`` among the distributions installed in ``lib``."""
    if lib not in sys.path:
        sys.path.append(lib)
    for dist in distributions(path=[lib]):
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and ep.name == kind:
                obj = ep.load()
                return obj.handler if isinstance(obj, TaskKind) else obj
    raise LookupError(f"no {ENTRY_POINT_GROUP} entry point {kind!r} in {lib}")


@dataclass(frozen=True)
class BundleHandler:
    """Loads and runs ``kind`` from the environment at ``lib``; loaded once
    per worker process (``cache``: the worker's own dict)."""

    lib: str
    kind: str

    def __call__(self, args: Mapping[str, Any], cache: dict[Any, Any] | None = None) -> Any:
        store = cache if cache is not None else {}
        handler = store.get(self)
        if handler is None:
            handler = store[self] = load_entry_point(self.lib, self.kind)
        return handler(args)


def bundle_kinds(manifest: Manifest, lib: Path) -> Registry:
    """The kinds of an installed bundle that run from its wheels, as the agent
    registers them (image kinds: :mod:`fogmesh.deploy.images`)."""
    return Registry({name: TaskKind(name=name, handler=BundleHandler(str(lib), name), weight=spec.weight,
                                    timeout_s=spec.timeout_s, description=spec.description or manifest.label,
                                    ships_handler=True)
                     for name, spec in manifest.kinds.items() if spec.image is None})
