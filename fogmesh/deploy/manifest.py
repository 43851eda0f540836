"""What a bundle says about itself, and the signed envelope documents travel in.

A bundle is a payload (the wheels, one after another) and a manifest: the
package's name and version, the kinds it registers (weight, timeout, a
health-check task each; or, for a kind backed by a container image, the
image pinned by digest, and then the payload may be empty), every wheel's tags, Requires-Python and SHA-256, and
the payload cut in chunks with a SHA-256 each, so an agent checks every
chunk as it arrives and resumes a download at the first one it lacks. The
manifest's own digest (over its canonical bytes) names the bundle on the
wire. Pure: values and checks, no IO.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from fogmesh import codec
from fogmesh.errors import DeployRefused, InvalidMessage
from fogmesh.messages import WEIGHTS

FORMAT = "fogmesh-bundle/1"
DEFAULT_CHUNK = 64 * 1024

__all__ = ["DEFAULT_CHUNK", "FORMAT", "ImageSpec", "KindSpec", "Manifest", "Signed", "Verifier", "WheelEntry",
           "chunk_digests", "pinned"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_digests(payload: bytes, chunk_size: int) -> list[str]:
    return [sha256(payload[i:i + chunk_size]) for i in range(0, len(payload), chunk_size)] or [sha256(b"")]


@dataclass(frozen=True)
class ImageSpec:
    """A kind backed by a container image (:mod:`fogmesh.deploy.images`),
    pinned by digest: the engine checks what it pulls against it."""

    ref: str                      # REPOSITORY@sha256:HEX
    service: bool = False         # one long-running container (fogmesh.container_services)
    memory: str | None = None
    cpus: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "service": self.service, "memory": self.memory, "cpus": self.cpus}

    @classmethod
    def from_dict(cls, d: Any) -> ImageSpec:
        if not isinstance(d, dict) or not pinned(str(d.get("ref", ""))):
            raise ValueError("an image kind needs a ref pinned by digest (REPOSITORY@sha256:...)")
        return cls(ref=str(d["ref"]), service=bool(d.get("service", False)),
                   memory=None if d.get("memory") is None else str(d["memory"]),
                   cpus=None if d.get("cpus") is None else str(d["cpus"]))


def pinned(ref: str) -> bool:
    """``ref`` names an image by its manifest's digest."""
    repo, sep, digest = ref.partition("@sha256:")
    return bool(repo) and bool(sep) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


@dataclass(frozen=True)
class KindSpec:
    """A kind the bundle registers; the agent builds its :class:`TaskKind`
    from this, never by importing the bundle into its own process."""

    weight: str = "light"
    timeout_s: float = 30.0
    description: str = ""
    health_args: Mapping[str, Any] = field(default_factory=dict)
    image: ImageSpec | None = None        # run in a container of this image, not from the wheels

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"weight": self.weight, "timeout_s": self.timeout_s, "description": self.description,
                             "health": {"args": dict(self.health_args)}}
        if self.image is not None:
            d["image"] = self.image.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> KindSpec:
        if not isinstance(d, dict) or d.get("weight", "light") not in WEIGHTS:
            raise ValueError(f"a kind needs a weight among {WEIGHTS}")
        health = d.get("health") or {}
        args = health.get("args", {}) if isinstance(health, dict) else None
        if not isinstance(args, dict):
            raise ValueError("a kind's health.args must be an object")
        return cls(weight=d.get("weight", "light"), timeout_s=float(d.get("timeout_s", 30.0)),
                   description=str(d.get("description", "")), health_args=args,
                   image=ImageSpec.from_dict(d["image"]) if d.get("image") is not None else None)


@dataclass(frozen=True)
class WheelEntry:
    file: str
    sha256: str
    size: int
    offset: int
    tags: tuple[str, ...]
    requires_python: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size, "offset": self.offset,
                "tags": list(self.tags), "requires_python": self.requires_python}

    @classmethod
    def from_dict(cls, d: Any) -> WheelEntry:
        name = d["file"]
        if not isinstance(name, str) or "/" in name or "\\" in name or not name.endswith(".whl"):
            raise ValueError(f"wheel file name {name!r} is not a plain *.whl name")
        return cls(file=name, sha256=str(d["sha256"]), size=int(d["size"]), offset=int(d["offset"]),
                   tags=tuple(str(t) for t in d["tags"]), requires_python=d.get("requires_python"))


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kinds: Mapping[str, KindSpec]
    wheels: tuple[WheelEntry, ...]
    payload_size: int
    payload_sha256: str
    chunk_size: int
    chunks: tuple[str, ...]
    requires_python: str | None = None
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "version": self.version,
                "requires_python": self.requires_python,
                "kinds": {k: s.to_dict() for k, s in sorted(self.kinds.items())},
                "wheels": [w.to_dict() for w in self.wheels],
                "payload": {"size": self.payload_size, "sha256": self.payload_sha256,
                            "chunk_size": self.chunk_size, "chunks": list(self.chunks)},
                "created": self.created}

    @property
    def digest(self) -> str:
        """The bundle's name on the wire: SHA-256 of the manifest's canonical bytes."""
        return sha256(codec.canonical(self.to_dict()))

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def images(self) -> dict[str, ImageSpec]:
        """The kinds backed by container images, and their images."""
        return {k: s.image for k, s in self.kinds.items() if s.image is not None}

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        try:
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} manifest")
            p = d["payload"]
            m = cls(name=str(d["name"]), version=str(d["version"]), requires_python=d.get("requires_python"),
                    kinds={str(k): KindSpec.from_dict(v) for k, v in d["kinds"].items()},
                    wheels=tuple(WheelEntry.from_dict(w) for w in d["wheels"]),
                    payload_size=int(p["size"]), payload_sha256=str(p["sha256"]),
                    chunk_size=int(p["chunk_size"]), chunks=tuple(str(c) for c in p["chunks"]),
                    created=float(d.get("created", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeployRefused("bad_bundle", f"the bundle's manifest is malformed: {exc}") from exc
        m.check_shape()
        return m

    def check_shape(self) -> None:
        """The manifest is self-consistent: wheels tile the payload, the chunk list covers it."""
        if not self.kinds:
            raise DeployRefused("bad_bundle", f"{self.label} registers no kind (no fogmesh.tasks entry point)")
        if self.chunk_size <= 0 or len(self.chunks) != max(1, -(-self.payload_size // self.chunk_size)):
            raise DeployRefused("bad_bundle", f"{self.label}: the chunk list does not cover the payload")
        at = 0
        for w in self.wheels:
            if w.offset != at or w.size < 0:
                raise DeployRefused("bad_bundle", f"{self.label}: wheel {w.file} is not where the payload has it")
            at += w.size
        if at != self.payload_size:
            raise DeployRefused("bad_bundle", f"{self.label}: the wheels do not add up to the payload")

    def chunk_span(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(self.payload_size, start + self.chunk_size)


class Verifier(Protocol):
    """What checks signatures (:class:`fogmesh.deploy.signing.TrustStore`)."""

    def verify(self, data: bytes, signatures: Sequence[object], *, what: str) -> str: ...


@dataclass(frozen=True)
class Signed:
    """A document and the signatures over its canonical bytes, as it travels:
    ``{"signed": {...}, "signatures": [{"key": id, "sig": base64}]}``."""

    document: Mapping[str, Any]
    signatures: tuple[Mapping[str, str], ...] = ()

    def encode(self) -> bytes:
        return codec.encode({"signed": self.document, "signatures": list(self.signatures)})

    @classmethod
    def decode(cls, payload: bytes, *, what: str) -> Signed:
        try:
            d = codec.decode(payload)
        except InvalidMessage as exc:
            raise DeployRefused("bad_document", f"{what} is not JSON: {exc}") from exc
        if not isinstance(d, dict) or not isinstance(d.get("signed"), dict):
            raise DeployRefused("bad_document", f"{what} is not a signed fogmesh document")
        sigs = d.get("signatures") or []
        return cls(d["signed"], tuple(s for s in sigs if isinstance(s, dict)) if isinstance(sigs, list) else ())

    def signed_with(self, sign: Callable[[bytes], Mapping[str, str]]) -> Signed:
        """With one more signature (``SigningKey.sign``); a key signs once."""
        entry = sign(codec.canonical(self.document))
        kept = tuple(s for s in self.signatures if s.get("key") != entry.get("key"))
        return Signed(self.document, kept + (entry,))

    def verified(self, trust: Verifier, *, what: str) -> str:
        """The trusted key that signed it, or :class:`DeployRefused`."""
        return trust.verify(codec.canonical(self.document), self.signatures, what=what)
