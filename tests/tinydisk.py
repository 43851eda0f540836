"""Real small and read-only filesystems for the disk-fault tests (see
bench/faultkit.py: a tmpfs mounted for the test; CI runs as root)."""

from fogmesh.bench.faultkit import fill, mounted_tmpfs

__all__ = ["fill", "mounted_tmpfs"]
