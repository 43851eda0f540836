"""Load a bundle's kinds in a process of their own: at build time (what are
their weights and timeouts?) and on the agent before a switch (does the new
version answer its health-check task?). A bundle that hangs, crashes or
leaks at import costs that process, never the operator's command or the
agent.

Run as ``python -m fogmesh.deploy.probe kinds LIB`` (prints the kinds'
specs as JSON) or ``... health LIB KIND ARGS_JSON`` (prints the result, exit
0; or the error, exit 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from fogmesh.deploy.manifest import KindSpec
from fogmesh.errors import DeployRefused

__all__ = ["health_check", "probe_kinds"]


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fogmesh.deploy.probe", *argv], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def probe_kinds(wheels: Sequence[Path], *, timeout_s: float = 60.0) -> Mapping[str, KindSpec]:
    """The kinds the wheels register, loaded in a fresh process from a scratch environment."""
    from fogmesh.deploy.install import env_lib, install_env
    with tempfile.TemporaryDirectory(prefix="fogmesh-probe-") as tmp:
        env = install_env(Path(tmp) / "env", wheels)
        try:
            done = _run(["kinds", str(env_lib(env))], timeout_s)
        except subprocess.TimeoutExpired:
            raise DeployRefused("bad_bundle", f"loading the kinds took over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise DeployRefused("bad_bundle", f"the bundle's kinds do not load: {done.stderr.strip()[-800:]}")
    return {k: KindSpec.from_dict(v) for k, v in json.loads(done.stdout).items()}


def health_check(lib: Path, kind: str, args: Mapping[str, object], *, timeout_s: float) -> str | None:
    """None if ``kind`` from ``lib`` answers ``args`` without an error within
    ``timeout_s``; else what went wrong."""
    try:
        done = _run(["health", str(lib), kind, json.dumps(dict(args))], timeout_s)
    except subprocess.TimeoutExpired:
        return f"the health-check task of {kind} did not answer within {timeout_s:.0f} s"
    if done.returncode != 0:
        lines = (done.stdout.strip() or done.stderr.strip() or f"exit code {done.returncode}").splitlines()
        return f"the health-check task of {kind} failed: {lines[-1][:300]}"
    return None


def _main(argv: Sequence[str]) -> int:
    from importlib.metadata import distributions

    from fogmesh.deploy.bundle_file import ENTRY_POINT_GROUP
    from fogmesh.deploy.kinds import load_entry_point
    from fogmesh.registry import TaskKind
    mode, lib = argv[0], argv[1]
    sys.path.append(lib)
    if mode == "kinds":
        out = {}
        for dist in distributions(path=[lib]):
            for ep in dist.entry_points:
                if ep.group == ENTRY_POINT_GROUP:
                    obj = ep.load()
                    spec = obj if isinstance(obj, TaskKind) else TaskKind(name=ep.name, handler=obj)
                    out[ep.name] = {"weight": spec.weight, "timeout_s": spec.timeout_s,
                                    "description": spec.description}
        print(json.dumps(out))
        return 0
    kind, args = argv[2], json.loads(argv[3])
    try:
        result = load_entry_point(lib, kind)(args)
        print(json.dumps({"result": result}, default=str)[:2000])
        return 0
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
