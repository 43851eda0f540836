"""Free loopback ports, so tests and benchmarks never fight over a fixed port."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

PICK_FROM = 20000          # the low end of the ports free_port chooses from


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the range the OS hands out to
    outgoing connections: a broker started a few seconds after the choice
    (RabbitMQ takes that long, and re-binds when a node joins a cluster)
    would otherwise find it taken by some client's connection, which is
    likely with tests running in parallel. Chosen at random, so parallel
    test processes rarely pick the same one."""
    low = _ephemeral_low()
    if low > PICK_FROM + 1000:
        for _ in range(50):
            port = random.randrange(PICK_FROM, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the OS's range for outgoing connections (Linux);
    0 where it cannot be read (then the OS picks)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def wait_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False
