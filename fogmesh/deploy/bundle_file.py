"""The bundle on the operator's disk: one file, the signed manifest on its
first line (compact JSON) and the payload (the wheels, one after another)
after it, so ``head -1 x.fogbundle`` shows what it is and signing rewrites
one line. ``fogmesh bundle build`` makes it from the user's wheel and the
wheelhouse of its dependencies; the kinds' weights and timeouts are read by
loading them in a process of their own (:mod:`fogmesh.deploy.probe`), never
in the operator's or an agent's own process."""

from __future__ import annotations

import email.parser
import os
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fogmesh.deploy.compat import wheel_tags
from fogmesh.deploy.manifest import DEFAULT_CHUNK, KindSpec, Manifest, Signed, WheelEntry, chunk_digests, sha256
from fogmesh.errors import DeployRefused

__all__ = ["Bundle", "build_bundle", "wheel_metadata"]

ENTRY_POINT_GROUP = "fogmesh.tasks"


@dataclass(frozen=True)
class Bundle:
    signed: Signed
    payload: bytes

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_dict(self.signed.document)

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(self.signed.encode() + b"\n")
            f.write(self.payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        return p

    @classmethod
    def read(cls, path: str | Path) -> Bundle:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DeployRefused("bad_bundle", f"cannot read the bundle {path}: {exc}") from exc
        head, sep, payload = data.partition(b"\n")
        if not sep:
            raise DeployRefused("bad_bundle", f"{path} is not a fogmesh bundle (make one with `fogmesh bundle build`)")
        signed = Signed.decode(head, what=f"bundle {path}")
        bundle = cls(signed, payload)
        bundle.check_payload()
        return bundle

    def check_payload(self) -> None:
        """Every chunk and wheel digest of the manifest holds for this payload."""
        m = self.manifest
        if len(self.payload) != m.payload_size or sha256(self.payload) != m.payload_sha256:
            raise DeployRefused("digest_mismatch", f"{m.label}: the payload does not match its manifest")
        if tuple(chunk_digests(self.payload, m.chunk_size)) != m.chunks:
            raise DeployRefused("digest_mismatch", f"{m.label}: a chunk does not match its manifest")
        for w in m.wheels:
            if sha256(self.payload[w.offset:w.offset + w.size]) != w.sha256:
                raise DeployRefused("digest_mismatch", f"{m.label}: wheel {w.file} does not match its manifest")


def wheel_metadata(path: Path) -> tuple[str, str, str | None, dict[str, str]]:
    """(name, version, Requires-Python, {kind: entry point}) of a wheel."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            meta_name = next(n for n in names if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            meta = email.parser.Parser().parsestr(z.read(meta_name).decode("utf-8"))
            eps_name = meta_name.replace("METADATA", "entry_points.txt")
            eps = z.read(eps_name).decode("utf-8") if eps_name in names else ""
    except (OSError, zipfile.BadZipFile, StopIteration, KeyError, UnicodeDecodeError) as exc:
        raise DeployRefused("bad_bundle", f"{path} is not a readable wheel: {exc!r}") from exc
    kinds: dict[str, str] = {}
    section = ""
    for raw in eps.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line and section == ENTRY_POINT_GROUP:
            name, value = (s.strip() for s in line.split("=", 1))
            kinds[name] = value
    return str(meta["Name"]), str(meta["Version"]), meta.get("Requires-Python"), kinds


def build_bundle(wheels: Sequence[str | Path], *, health: Mapping[str, Mapping[str, Any]] | None = None,
                 probe: Callable[[Sequence[Path]], Mapping[str, KindSpec]],
                 chunk_size: int = DEFAULT_CHUNK, clock: Callable[[], float] = time.time) -> Bundle:
    """An unsigned bundle of ``wheels``: the one among them with ``fogmesh.tasks``
    entry points is the package; the others are its wheelhouse. ``probe``
    loads the kinds (in another process) for their weight and timeout."""
    paths = [Path(w) for w in wheels]
    metas = [wheel_metadata(p) for p in paths]
    main = [m for m in metas if m[3]]
    if len(main) != 1:
        raise DeployRefused("bad_bundle", "give exactly one wheel that registers kinds (a [project.entry-points."
                            f"\"fogmesh.tasks\"] table); found {len(main)} among {', '.join(p.name for p in paths)}")
    name, version, requires_python, _eps = main[0]
    specs = dict(probe(paths))
    for kind, args in (health or {}).items():
        if kind not in specs:
            raise DeployRefused("bad_bundle", f"--health {kind}: the bundle has no kind {kind!r} "
                                f"(it has {', '.join(sorted(specs))})")
        specs[kind] = replace(specs[kind], health_args=dict(args))
    entries, parts, at = [], [], 0
    for p in paths:
        data = p.read_bytes()
        entries.append(WheelEntry(file=p.name, sha256=sha256(data), size=len(data), offset=at,
                                  tags=wheel_tags(p.name), requires_python=wheel_metadata(p)[2]))
        parts.append(data)
        at += len(data)
    payload = b"".join(parts)
    manifest = Manifest(name=name, version=version, kinds=specs, wheels=tuple(entries), payload_size=len(payload),
                        payload_sha256=sha256(payload), chunk_size=chunk_size,
                        chunks=tuple(chunk_digests(payload, chunk_size)), requires_python=requires_python,
                        created=round(clock(), 3))
    manifest.check_shape()
    return Bundle(Signed(manifest.to_dict()), payload)
