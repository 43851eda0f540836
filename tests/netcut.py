"""A TCP proxy in front of a broker that can cut every connection through it,
as a flaky Wi-Fi link or a rebooting switch does. Clients reconnect through it.
It can also reset connections right after the broker's CONNACK, as a broker
node that dies (or drops a session it cannot resume) just after accepting one."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import Callable

from fogmesh.broker.ports import free_port


class CuttableLink:
    def __init__(self, target_host: str, target_port: int, *,
                 delay: Callable[[bytes], float] | None = None, rate: float | None = None) -> None:
        """``delay(first_bytes)``: seconds to hold a new connection's first
        bytes (its CONNECT) before the broker gets them, as a slow path to the
        broker does for one connection and not another. ``rate``: bytes per
        second from the broker to each client at most (a slow link)."""
        self.target = (target_host, target_port)
        self._delay = delay
        self._rate = rate
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._holding = threading.Event()
        self.cuts = 0
        self._to_reset = 0                 # connections still to reset after their CONNACK
        self.resets = 0                    # connections reset so far
        self.writes: list[bytes] = []      # what clients sent, one item per read: how they wrote it
        self.openings: list[bytes] = []    # the first byte a client sent on each connection
        self.delivered: list[int] = []     # sizes of what the broker sent clients, one item per read
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:           # the broker is down: so is the client's connection
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, upstream))
                reset, self._to_reset = self._to_reset > 0, max(0, self._to_reset - 1)
            if reset:
                threading.Thread(target=self._connack_then_reset, args=(client, upstream), daemon=True).start()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, self._holding, self.writes,
                                                      self._delay, None, None, self.openings),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None, None, None, self.delivered,
                                                      self._rate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, holding: threading.Event | None,
              record: list[bytes] | None, delay: Callable[[bytes], float] | None = None,
              sizes: list[int] | None = None, rate: float | None = None,
              openings: list[bytes] | None = None) -> None:
        first = True
        try:
            while data := src.recv(16384 if rate else 65536):
                if first and openings is not None:
                    openings.append(data[:1])
                if sizes is not None:
                    sizes.append(len(data))
                if rate:
                    time.sleep(len(data) / rate)     # the slow link this models, not a wait
                if first and delay is not None:
                    time.sleep(delay(data))      # the slow path this link models, not a wait
                first = False
                if record is not None:
                    record.append(data)
                if holding is None or not holding.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset_after_connack(self, connections: int) -> None:
        """Reset each of the next ``connections`` connections right after the
        broker's first bytes (its CONNACK) reached the client: the client
        reads the CONNACK, and its next write or read fails (ECONNRESET)."""
        with self._lock:
            self._to_reset = connections

    def _connack_then_reset(self, client: socket.socket, upstream: socket.socket) -> None:
        """One thread for such a connection: a socket that another thread is
        reading would send its RST only once that read returns."""
        first = True
        try:
            while ready := select.select([client, upstream], [], [], 10)[0]:
                if upstream in ready:
                    if data := upstream.recv(65536):
                        client.sendall(data)
                    break
                data = client.recv(65536)
                if not data:
                    break
                if first:
                    self.openings.append(data[:1])
                    first = False
                self.writes.append(data)
                upstream.sendall(data)
        except OSError:
            pass
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                      # with a zero linger: a RST, not a FIN
        upstream.close()
        with self._lock:
            self.resets += 1

    def hold(self) -> None:
        """Swallow what clients send from now on (the broker never gets it), as
        a link that dies silently does; ``cut`` ends the hold."""
        self._holding.set()

    def cut(self) -> None:
        """Drop every connection through the link, both ways, at once."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts += 1
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
        self._holding.clear()      # only now: held bytes must not slip through before the close

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()
