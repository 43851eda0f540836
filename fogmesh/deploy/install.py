"""Wheels into a bundle's own environment (the one module that imports
``installer``): no pip, no index, no network, nothing outside the directory.

An environment is a directory ``<name>-<version>-<digest12>`` holding
``lib`` (pure and platform modules), ``bin``, ``data`` and ``include``. It is
built under a ``.tmp`` name and renamed when complete, so an environment
that exists is whole; a crash mid-install leaves only a ``.tmp`` that the
next install removes. Workers put ``lib`` on their path (see
:mod:`fogmesh.deploy.kinds`); fogmesh's own process never does.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.sources import WheelFile

from fogmesh.errors import DeployRefused

__all__ = ["env_lib", "install_env"]


def env_lib(env: Path) -> Path:
    return env / "lib"


def install_env(env: Path, wheels: Sequence[Path]) -> Path:
    """Install ``wheels`` into ``env`` (built at ``env.tmp``, then renamed).
    A wheel whose RECORD does not match its files is refused."""
    tmp = env.with_name(env.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "lib").mkdir(parents=True)            # (a bundle of image kinds installs no wheel)
    scheme = {"purelib": str(tmp / "lib"), "platlib": str(tmp / "lib"), "headers": str(tmp / "include"),
              "scripts": str(tmp / "bin"), "data": str(tmp / "data")}
    destination = SchemeDictionaryDestination(scheme, interpreter=sys.executable, script_kind="posix")
    try:
        for wheel in wheels:
            with WheelFile.open(wheel) as source:
                source.validate_record()
                install(source=source, destination=destination, additional_metadata={})
    except (InstallerError, ValueError, OSError, KeyError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        code = "no_space" if isinstance(exc, OSError) and exc.errno == 28 else "install_failed"
        raise DeployRefused(code, f"installing {wheel.name} failed: {exc}") from exc
    except Exception as exc:   # installer raises plain exceptions for some malformed wheels
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployRefused("install_failed", f"installing {wheel.name} failed: {type(exc).__name__}: {exc}") from exc
    shutil.rmtree(env, ignore_errors=True)
    tmp.rename(env)
    return env
