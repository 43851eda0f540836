"""Image kinds in a bundle: a kind backed by a container image goes through
the same signed desired-state path as a wheel bundle. The manifest names the
image pinned by digest (``REPOSITORY@sha256:...``), so the signature covers
exactly which image runs; the agent pulls it by that digest (the engine
checks the content against it), health-checks it, and only then switches.
Nothing of the image travels over MQTT: it comes from the registry the
reference names (tests use Debian's docker-registry on loopback).

An agent without a container engine refuses such a bundle (``incompatible``)
and keeps what it runs. A service kind's container is named per bundle
(``fogmesh-svc-{agent}-{kind}-{digest8}``): the version being checked never
answers through the container of the version that serves, and the agent's
:class:`~fogmesh.service_keeper.ServiceKeeper` stops the old one when
the kinds switch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

from fogmesh.container_engine import ContainerEngine
from fogmesh.container_services import service_kind
from fogmesh.containers import ContainerError, image_kind
from fogmesh.deploy.bundle_file import Bundle
from fogmesh.deploy.image_ref import parse_ref
from fogmesh.deploy.manifest import DEFAULT_CHUNK, ImageSpec, KindSpec, Manifest, Signed, chunk_digests, pinned, sha256
from fogmesh.deploy.registry import RegistryError, served_digest
from fogmesh.errors import DeployRefused
from fogmesh.registry import TaskKind

__all__ = ["image_bundle", "image_health", "image_kinds", "pin", "pull_images"]


def pin(ref: str, *, timeout: float = 30.0) -> str:
    """``ref`` pinned by digest: as given if it is, else named by the digest
    its registry serves for the tag (what agents will pull; never this box's
    copy's, which for an image built here differs until it is pushed, and
    for a multi-platform image the index's, so each agent pulls its own)."""
    if pinned(ref):
        return ref
    try:
        image = parse_ref(ref)
        return image.pinned(served_digest(image, timeout=timeout))
    except (ValueError, RegistryError) as exc:
        raise DeployRefused("bad_bundle", f"cannot pin {ref} to a digest: {exc}") from exc


def image_bundle(name: str, version: str, images: Mapping[str, ImageSpec], *,
                 health: Mapping[str, Mapping[str, Any]] | None = None, weight: str = "medium",
                 timeout_s: float = 30.0, clock: Callable[[], float] = time.time) -> Bundle:
    """An unsigned bundle of image kinds: no wheels, an empty payload."""
    health = health or {}
    unknown = sorted(set(health) - set(images))
    if unknown:
        raise DeployRefused("bad_bundle", f"--health {unknown[0]}: the bundle has no kind {unknown[0]!r}")
    for kind, spec in images.items():
        if not pinned(spec.ref):
            raise DeployRefused("bad_bundle", f"image kind {kind}: {spec.ref} is not pinned by digest")
    kinds = {kind: KindSpec(weight=weight, timeout_s=timeout_s, description=f"container {spec.ref}",
                            health_args=dict(health.get(kind, {})), image=spec) for kind, spec in images.items()}
    manifest = Manifest(name=name, version=version, kinds=kinds, wheels=(), payload_size=0,
                        payload_sha256=sha256(b""), chunk_size=DEFAULT_CHUNK,
                        chunks=tuple(chunk_digests(b"", DEFAULT_CHUNK)), created=round(clock(), 3))
    manifest.check_shape()
    return Bundle(Signed(manifest.to_dict()), b"")


def pull_images(manifest: Manifest, engine: ContainerEngine | None, *, timeout_s: float = 600.0) -> None:
    """Every image of ``manifest`` on this box, pulled by digest; or
    :class:`DeployRefused` (``incompatible`` without an engine, else ``image_pull_failed``)."""
    images = manifest.images
    if not images:
        return
    if engine is None:
        raise DeployRefused("incompatible", f"{manifest.label} runs kinds in containers and this agent has no "
                            "container engine; install podman or docker (Debian: apt-get install podman runc)")
    for kind, spec in sorted(images.items()):
        try:
            engine.pull(spec.ref, timeout_s=timeout_s)
        except ContainerError as exc:
            raise DeployRefused("image_pull_failed", f"{manifest.label}: kind {kind}: cannot pull {spec.ref}: "
                                f"{exc}") from exc


def image_kinds(manifest: Manifest, *, engine: ContainerEngine, agent: str, state_dir: Path) -> list[TaskKind]:
    """The kinds of ``manifest`` backed by images, as the agent registers them."""
    kinds = []
    for kind, spec in sorted(manifest.images.items()):
        k = manifest.kinds[kind]
        if spec.service:
            kinds.append(service_kind(kind, spec.ref, engine=engine, agent=agent, state_dir=state_dir,
                                      timeout_s=k.timeout_s, memory=spec.memory, cpus=spec.cpus,
                                      instance=manifest.digest[:8], weight=k.weight))
        else:
            kinds.append(image_kind(kind, spec.ref, engine=engine, timeout_s=k.timeout_s, memory=spec.memory,
                                    cpus=spec.cpus, weight=k.weight, owner=agent))
    return kinds


def image_health(kind: TaskKind, args: Mapping[str, Any]) -> str | None:
    """Run ``kind``'s health task here (the handler runs the container): None if it answered."""
    try:
        kind.handler(args)
    except Exception as exc:      # the kind's failure is the verdict, whatever it raised
        return f"its health-check task of {kind.name} failed: {type(exc).__name__}: {exc}"
    return None
