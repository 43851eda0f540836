"""A service container's Unix socket, as a :class:`fogmesh.container_engine.Channel`
(the one module of container kinds that opens sockets)."""

from __future__ import annotations

import socket

__all__ = ["UnixChannel", "connect"]


class UnixChannel:
    """One connection; ``recv`` raises TimeoutError after the connection's timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, most: int) -> bytes:
        return self._sock.recv(most)

    def close(self) -> None:
        self._sock.close()


def connect(path: str, *, timeout_s: float) -> UnixChannel:
    """A connection to whatever listens on ``path``; OSError if nothing does."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    return UnixChannel(s)
