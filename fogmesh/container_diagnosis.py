"""Why a container engine could not start a container, and what to do: the
engine's error text read into a cause (pure; :mod:`fogmesh.containers`
runs the engine, ``fogmesh doctor`` and the agent's errors say it).

The causes a box meets: the runtime cannot set the containers' resource
limits (an unprivileged or nested box: podman's default ulimits), the OCI
runtime named is not installed, cgroups (no systemd for the systemd
manager, no memory controller for ``--memory``), storage (a full disk, a
driver the filesystem does not support), permissions (no subordinate ids
for a rootless user, the docker socket), the docker daemon down, the image
not on the box. Also which local image is the cheapest to try a start with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Diagnosis", "diagnose", "parse_size", "smallest_image"]

CONTAINERS_CONF = ("containers.conf (/etc/containers/containers.conf, ~/.config/containers/containers.conf, "
                   "or the file $CONTAINERS_CONF names: the agent's service needs the same)")


@dataclass(frozen=True)
class Diagnosis:
    """``cause``: rlimits, runtime, cgroups, storage, permission, daemon, image,
    no-command (the container started: the image lacks the command), other."""

    cause: str
    reason: str
    fix: str


def _rules(engine: str) -> list[tuple[str, str, str, str]]:
    """(pattern, cause, reason, fix), the most specific first."""
    docker = engine == "docker"
    return [
        (r"rlimit", "rlimits", "the runtime may not set the containers' resource limits (rlimits) on this box",
         "docker: drop default-ulimits from /etc/docker/daemon.json and restart docker" if docker else
         f"set `default_ulimits = []` under [containers] in {CONTAINERS_CONF}"),
        (r"OCI runtime \"?[\w./-]+\"? not found|unknown or invalid runtime name|"
         r"exec: \"(runc|crun)\": executable file not found", "runtime",
         "the OCI runtime it is set to use is not installed",
         "install it (Debian: apt-get install runc, or crun), or name one that is: `runtime = \"runc\"` under "
         f"[engine] in {CONTAINERS_CONF}" if not docker else "install runc (or containerd's), then restart docker"),
        (r"systemd not running|no systemd user session|systemd cgroup|sd-bus|dbus", "cgroups",
         "the systemd cgroup manager is set, and there is no systemd (session) for it here",
         f"set `cgroup_manager = \"cgroupfs\"` under [engine] in {CONTAINERS_CONF}, or run as a user with a "
         "systemd session (`loginctl enable-linger USER`)"),
        (r"memory\.max|memory cgroup|memory limit|cgroup controller|controllers? .*not available|"
         r"does not support (memory|cpu)", "cgroups",
         "the kernel's memory or cpu cgroup controller is not enabled (--memory, --cpus need them)",
         "enable cgroups v2 with the memory controller: on a Raspberry Pi add `cgroup_enable=memory "
         "cgroup_memory=1` to /boot/firmware/cmdline.txt (older: /boot/cmdline.txt) and reboot"),
        (r"cgroup", "cgroups", "the engine cannot set up the container's cgroup",
         "check `podman info` (cgroupVersion, cgroupManager, cgroupControllers); cgroups v2 with the memory and "
         "cpu controllers is what fogmesh's --memory and --cpus need"),
        (r"no space left on device|disk quota exceeded", "storage", "the disk that holds the engine's storage is full",
         f"free space there (`{engine} system df`, `{engine} image prune`) or move the storage to a larger disk"),
        (r"driver not supported|prerequisites for driver|graph ?driver|overlay|storage|database|layer not known|"
         r"read-only file system", "storage", "the engine's storage does not work here",
         f"check `{engine} info` (its storage driver and where it keeps images); the driver in "
         "/etc/containers/storage.conf must suit the filesystem (vfs works everywhere, slowly); after a driver "
         f"change `{engine} system reset` (it removes every image and container)"),
        (r"subuid|subgid|newuidmap|newgidmap|uid/gid mapping|not enough ids", "permission",
         "this user has no subordinate user ids for rootless containers",
         "give it a range: `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, then "
         "`podman system migrate`"),
        (r"permission denied while trying to connect to the docker daemon", "permission",
         "this user may not use the docker daemon",
         "add it to group docker (`sudo usermod -aG docker USER`, then log in again), or run the agent as root"),
        (r"cannot connect to the docker daemon|is the docker daemon running", "daemon",
         "the docker daemon is not running", "start it: `sudo systemctl enable --now docker`"),
        (r"image not known|no such image|unable to find image|manifest unknown|pull access denied", "image",
         "the image is not on this box",
         f"pull it once (`{engine} pull IMAGE`), or name an image `{engine} images` lists"),
        (r"executable file not found|no such file or directory: .*exec|command not found", "no-command",
         "the container started; the image has no `true` to run",
         "name an image with a shell (busybox, debian, alpine, python...) to check with"),
        (r"permission denied|operation not permitted|not permitted", "permission",
         "the kernel or a security module refused the engine (seccomp, AppArmor, SELinux, or a container inside a "
         "container)",
         f"run `{engine} run --rm IMAGE true` as this user for the whole message; `journalctl -k` shows a refusal"),
    ]


def diagnose(engine: str, text: str) -> Diagnosis:
    """Read the engine's error output: its last ``Error:`` line first (the
    failure itself), then the rest (a warning may name the cause)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error") or "level=error" in line or "Error:" in line]
    final = errors[-1] if errors else (lines[-1] if lines else "")
    rules = _rules(engine)
    for where in (final, text):
        for pattern, cause, reason, fix in rules:
            if re.search(pattern, where, re.IGNORECASE):
                return Diagnosis(cause, f"{reason} ({_short(final)})", fix)
    return Diagnosis("other", _short(final) or "it failed without a message",
                     f"`{engine} run --rm IMAGE true` as this user shows the same; see its whole message")


def _short(line: str) -> str:
    line = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", line)
    return line[:300]


_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> float | None:
    """An engine's image size (``241 MB``, ``4.26MB``, ``1.2GB``, ``5.6 kB``) in bytes; None if unreadable."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgGtT]?i?[bB])\s*", text)
    if not m:
        return None
    try:
        return float(m.group(1)) * _UNITS[m.group(2).lower()]
    except (ValueError, KeyError):
        return None


def smallest_image(rows: list[tuple[str, str]]) -> str | None:
    """The smallest named image of ``(REPOSITORY:TAG, size)`` rows (``images``'
    listing), to try a start with; None when there is none."""
    named = [(parse_size(size), name) for name, size in rows
             if name and "<none>" not in name]
    if not named:
        return None
    return min(named, key=lambda r: (r[0] is None, r[0] or 0.0, r[1]))[1]
