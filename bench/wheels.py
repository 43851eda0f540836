"""Small real wheels for ``fogmesh bench deploy`` and the deployment tests,
written the way any build backend writes them (METADATA, WHEEL,
entry_points.txt, a RECORD with hashes), in milliseconds and without a
build backend or an index."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Mapping


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(out_dir: Path, name: str, version: str, files: Mapping[str, str | bytes], *,
               requires: tuple[str, ...] = (), kinds: Mapping[str, str] | None = None,
               tag: str = "py3-none-any", requires_python: str | None = None) -> Path:
    """A wheel of ``files`` (path -> text or bytes); ``kinds``: fogmesh.tasks entry points."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    contents = {path: src.encode() if isinstance(src, str) else src for path, src in files.items()}
    contents[f"{dist}/METADATA"] = ("\n".join(meta) + "\n").encode()
    contents[f"{dist}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    if kinds:
        contents[f"{dist}/entry_points.txt"] = ("[fogmesh.tasks]\n" + "".join(
            f"{k} = {v}\n" for k, v in kinds.items())).encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in contents.items()) + f"{dist}/RECORD,,\n"
    contents[f"{dist}/RECORD"] = record.encode()
    path = out_dir / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in contents.items():
            z.writestr(p, d)
    return path


PLANT_SOURCE = '''\
import plantdep
from fogmesh.registry import TaskKind

VERSION = "{version}"


def _plant(args):
    {body}
    return {{"version": VERSION, "water_ml": plantdep.scale(args.get("moisture", 0))}}


PLANT = TaskKind(name="plant", handler=_plant, weight="light", timeout_s=5.0)
'''


BROKEN = {
    False: "pass",
    True: 'raise RuntimeError("calibration table missing")',
    # passes the health check in its own process, fails in an agent's workers
    "in_workers": 'if not __import__("sys").argv[0].endswith("probe.py"): raise RuntimeError("no GPIO here")',
}


def plant_wheels(out_dir: Path, version: str, *, broken: bool | str = False, padding: int = 0,
                 tag: str = "py3-none-any") -> list[Path]:
    """``plantcare`` (kind ``plant``) and its dependency ``plantdep``. A
    ``broken`` version fails every task, so its health check fails too
    (``"in_workers"``: only where an agent runs it, not in the check before
    the switch); ``padding`` bytes of incompressible data make the bundle that
    much larger."""
    out_dir.mkdir(parents=True, exist_ok=True)
    body = BROKEN[broken]
    files: dict[str, str | bytes] = {"plantcare/__init__.py": PLANT_SOURCE.format(version=version, body=body)}
    if padding:
        files["plantcare/blob.bin"] = os.urandom(padding)      # incompressible: the wheel grows by as much
    dep = out_dir / "plantdep-1.0-py3-none-any.whl"
    if not dep.exists():
        make_wheel(out_dir, "plantdep", "1.0", {"plantdep/__init__.py": "def scale(x):\n    return 10 * x\n"})
    main = make_wheel(out_dir, "plantcare", version, files, requires=("plantdep>=1",),
                      kinds={"plant": "plantcare:PLANT"}, tag=tag)
    return [main, dep]
