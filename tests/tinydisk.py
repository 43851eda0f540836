"""Real small and read-only filesystems for the disk-fault tests: a tmpfs of a
few hundred KiB (a disk that fills up) and a read-only one. Mounting needs
root, which CI has (`.ci/run` installs packages with apt-get)."""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(path: Path, *, size_kb: int, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for a disk-fault test (run the tests as root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, *, leave_bytes: int) -> Path:
    """Fill the filesystem of ``path`` until ``leave_bytes`` are free; returns
    the filler file (delete it to free the space again)."""
    filler = path / "filler"
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler
