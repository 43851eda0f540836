"""What an installation holds on disk: a site-packages directory's size and
how much of it each distribution brings (``fogmesh bench footprint``).

Sizes are the files' own sizes (as ``du --apparent-size``; a file system's
blocks round each file up), in MB of 2^20 bytes (as ``du -m``). A
distribution's share is the files its RECORD lists that lie inside the
directory (its scripts in ``bin/`` are outside and not counted); what no
RECORD lists (caches written later, a ``.pth`` file made by hand) is in the
total only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

MB = 2**20


@dataclass(frozen=True)
class DistSize:
    name: str
    version: str
    mb: float


@dataclass(frozen=True)
class InstallSize:
    site_packages: str
    total_mb: float
    #: every distribution in the directory, largest first
    distributions: list[DistSize] = field(default_factory=list)

    def largest(self, n: int) -> list[DistSize]:
        return self.distributions[:n]

    def of(self, *names: str) -> float:
        """The MB the distributions named bring (names as pip spells them, any case, ``-`` or ``_``)."""
        wanted = {_normal(n) for n in names}
        return sum(d.mb for d in self.distributions if _normal(d.name) in wanted)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tree_bytes(directory: Path) -> int:
    """The sizes of the regular files under ``directory`` (symbolic links not followed)."""
    total = 0
    for here, _dirs, files in os.walk(directory):
        for name in files:
            st = os.lstat(os.path.join(here, name))
            if not os.path.islink(os.path.join(here, name)):
                total += st.st_size
    return total


def _dist_bytes(dist: metadata.Distribution, inside: Path) -> int:
    total = 0
    seen: set[Path] = set()
    for f in dist.files or ():
        path = Path(os.path.normpath(inside / f))
        if path in seen or inside not in path.parents:
            continue
        seen.add(path)
        try:
            st = path.lstat()
        except OSError:          # listed, not there (a .pyc never written)
            continue
        if not path.is_symlink():
            total += st.st_size
    return total


def measure(site_packages: Path) -> InstallSize:
    """The size of ``site_packages`` and of each distribution installed in it."""
    inside = site_packages.resolve()
    dists = [DistSize(d.metadata["Name"] or "?", d.version or "?", _dist_bytes(d, inside) / MB)
             for d in metadata.distributions(path=[str(inside)])]
    dists.sort(key=lambda d: (-d.mb, d.name.lower()))
    return InstallSize(site_packages=str(site_packages), total_mb=tree_bytes(inside) / MB, distributions=dists)
