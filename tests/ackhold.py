"""A TCP proxy in front of a broker that holds back the broker's PUBACKs to
its clients while told to, and lets them through later: a broker that takes
a client's publishes but confirms them late (one busy forwarding to a slow
reader). Everything else passes at once, both ways."""

from __future__ import annotations

import socket
import threading

from fogmesh.broker.ports import free_port
from fogmesh.mqtt_framing import split_packets

PUBACK = 0x40


class AckHoldingLink:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._holding = False
        self._held: list[tuple[socket.socket, bytes]] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def hold(self) -> None:
        with self._lock:
            self._holding = True

    def release(self) -> None:
        """Send every PUBACK held so far, in order, and hold no more."""
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
            for sock, packet in held:
                try:
                    sock.sendall(packet)
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _up(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        dst.close()

    def _down(self, src: socket.socket, dst: socket.socket) -> None:
        buffer = bytearray()
        try:
            while data := src.recv(65536):
                buffer += data
                for packet in split_packets(buffer):
                    with self._lock:        # release() sends what it held before anything newer passes
                        if self._holding and packet[0] & 0xF0 == PUBACK:
                            self._held.append((dst, packet))
                        else:
                            dst.sendall(packet)
        except OSError:
            pass
        dst.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
