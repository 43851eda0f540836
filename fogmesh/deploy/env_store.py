"""A box's deployment directory: the environments, the staging area and
``applied.json`` (what runs, and the last serial taken per target).

Layout under ``{state_dir}/deploy-{agent}``::

    applied.json                    written whole (tmp + fsync + rename)
    envs/<name>-<version>-<d12>/    one per installed version (install.py)
    staging/<digest>/payload        a download under way (resumes from here)

Only what ``applied.json`` names is run; an environment it does not name
is removed at the next start, as is a staging directory no change wants.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from fogmesh.deploy.desired import Applied
from fogmesh.deploy.manifest import Manifest, sha256
from fogmesh.errors import DeployRefused

__all__ = ["EnvStore"]


class EnvStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.envs = root / "envs"
        self.staging = root / "staging"

    def open(self) -> None:
        for d in (self.root, self.envs, self.staging):
            d.mkdir(parents=True, exist_ok=True)

    # -- what runs -----------------------------------------------------------------
    def load(self) -> tuple[dict[str, Applied], dict[str, int], dict[str, Any]]:
        """(applied bundles, serial taken per target, per-bundle extras: kinds, restarts)."""
        try:
            d = json.loads((self.root / "applied.json").read_text())
        except FileNotFoundError:
            return {}, {}, {}
        except (OSError, ValueError) as exc:
            raise DeployRefused("bad_state", f"{self.root / 'applied.json'} cannot be read ({exc}); "
                                "move it away to start the deployments of this box afresh") from exc
        applied = {k: Applied(**v) for k, v in d.get("applied", {}).items()}
        return applied, {k: int(v) for k, v in d.get("taken", {}).items()}, d.get("extras", {})

    def save(self, applied: Mapping[str, Applied], taken: Mapping[str, int], extras: Mapping[str, Any]) -> None:
        path = self.root / "applied.json"
        tmp = path.with_name("applied.json.tmp")
        data = {"applied": {k: asdict(v) for k, v in applied.items()}, "taken": dict(taken), "extras": dict(extras)}
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def env_of(self, name: str, version: str, digest: str) -> Path:
        return self.envs / f"{name}-{version}-{digest[:12]}"

    def manifest_of(self, env: Path) -> Manifest:
        return Manifest.from_dict(json.loads((env / "manifest.json").read_text()))

    def drop_env(self, env: Path) -> None:
        shutil.rmtree(env, ignore_errors=True)

    def keep_only(self, envs: set[Path], staging: Iterable[str] = ()) -> None:
        """Remove environments and staging directories not in use."""
        staging = set(staging)
        for d in self.envs.iterdir() if self.envs.exists() else ():
            if d not in envs:
                shutil.rmtree(d, ignore_errors=True)
        for d in self.staging.iterdir() if self.staging.exists() else ():
            if d.name not in staging:
                shutil.rmtree(d, ignore_errors=True)

    # -- downloads -----------------------------------------------------------------
    def payload(self, digest: str) -> Path:
        """Where a bundle's payload is staged."""
        return self.staging / digest / "payload"

    def staged(self, manifest: Manifest) -> tuple[Path, set[int]]:
        """The staging payload file (made at its full size) and the chunks it already holds whole."""
        payload = self.payload(manifest.digest)
        payload.parent.mkdir(parents=True, exist_ok=True)
        have: set[int] = set()
        if payload.exists() and payload.stat().st_size == manifest.payload_size:
            with open(payload, "rb") as f:
                for i, want in enumerate(manifest.chunks):
                    start, end = manifest.chunk_span(i)
                    f.seek(start)
                    if sha256(f.read(end - start)) == want:
                        have.add(i)
        else:
            with open(payload, "wb") as f:
                f.truncate(manifest.payload_size)
        return payload, have

    def drop_staging(self, digest: str) -> None:
        shutil.rmtree(self.staging / digest, ignore_errors=True)

    def wheels_from(self, manifest: Manifest, payload: Path) -> list[Path]:
        """Check the whole payload and cut it into its wheel files."""
        data = payload.read_bytes()
        if sha256(data) != manifest.payload_sha256:
            raise DeployRefused("digest_mismatch", f"{manifest.label}: the downloaded payload does not match "
                                "its manifest")
        out = payload.parent / "wheels"
        out.mkdir(exist_ok=True)
        files = []
        for w in manifest.wheels:
            blob = data[w.offset:w.offset + w.size]
            if sha256(blob) != w.sha256:
                raise DeployRefused("digest_mismatch", f"{manifest.label}: wheel {w.file} does not match its manifest")
            path = out / w.file
            path.write_bytes(blob)
            files.append(path)
        return files
