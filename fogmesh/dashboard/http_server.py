"""The dashboard's HTTP server: a thread per connection, on IPv4 or IPv6,
with the limits that keep slow or many connections from holding it
(issue #37: a slowloris did).

- A request's head and body must arrive within :data:`HEAD_TIMEOUT_S` of the
  moment the server starts reading it (:class:`DeadlineReader`): a client
  that trickles a byte every few seconds never lets a per-read timeout fire,
  a deadline for the whole request does. An idle connection waiting for its
  next request is closed then too; between reads of a request, and while an
  answer (an event stream) is written, the per-read timeout is
  :data:`IDLE_TIMEOUT_S`.
- At most :data:`MAX_CONNECTIONS` connections at once, and
  :data:`MAX_PER_SOURCE` from one address (IPv6: its /64; a
  ``--trusted-proxy`` is counted in the total only): one more is closed at
  once, before a thread is started for it or a byte is read.
- ``--host`` may be an IPv6 address (``::1``); ``::`` listens on IPv6 and,
  where the system allows, IPv4 too.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections import Counter
from contextlib import suppress
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Iterable

from fogmesh.dashboard.attempts import source_of
from fogmesh.dashboard.lines import Lines

log = logging.getLogger("fogmesh.dashboard")

HEAD_TIMEOUT_S = 10.0          # a request's line, headers and body arrive within this
IDLE_TIMEOUT_S = 60.0          # one read or write waits at most this
MAX_CONNECTIONS = 256          # open at once, in all (64 event streams at most among them)
MAX_PER_SOURCE = 64            # open at once from one address (a NAT of a few users)

__all__ = ["HEAD_TIMEOUT_S", "IDLE_TIMEOUT_S", "MAX_CONNECTIONS", "MAX_PER_SOURCE", "DashboardHTTPServer",
           "DeadlineReader"]


class DeadlineReader(io.RawIOBase):
    """The raw reader under a handler's ``rfile``: each read waits at most
    until ``deadline()`` (a monotonic time; None: none) and at most
    ``idle_s``; past the deadline it raises :class:`TimeoutError`, which
    ends the connection (``BaseHTTPRequestHandler`` closes it)."""

    def __init__(self, raw: Any, sock: socket.socket, *, deadline: Callable[[], float | None], idle_s: float) -> None:
        super().__init__()
        self._raw, self._sock, self._deadline, self._idle_s = raw, sock, deadline, idle_s

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        wait = self._idle_s
        deadline = self._deadline()
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(wait)
        try:
            return self._raw.readinto(b)   # type: ignore[no-any-return]
        finally:
            with suppress(OSError):
                self._sock.settimeout(self._idle_s)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class DashboardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128     # connections waiting for accept(): a burst is answered (429), not reset
    max_connections = MAX_CONNECTIONS
    max_per_source = MAX_PER_SOURCE

    def __init__(self, address: tuple[str, int], handler: Any, *, exempt: Iterable[str] = ()) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._dual_stack = host == "::"
        self.exempt = frozenset(exempt)          # addresses counted in the total only (trusted proxies)
        self._open: Counter[str] = Counter()
        self._open_lock = threading.Lock()
        self.refused_connections = 0
        self._lines = Lines(log)
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self._dual_stack:
            with suppress(OSError, AttributeError):       # IPv4 too, where the system allows
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def open_connections(self) -> int:
        with self._open_lock:
            return sum(self._open.values())

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, or, past the caps, closed at once."""
        peer = str(client_address[0])
        source = source_of(peer)
        with self._open_lock:
            total = sum(self._open.values())
            full = total >= self.max_connections or \
                (peer not in self.exempt and self._open[source] >= self.max_per_source)
            if full:
                self.refused_connections += 1
            else:
                self._open[source] += 1
        if full:
            self.shutdown_request(request)
            self._lines.warning("connections", source, "dashboard: closed a connection from %s at once: %d open "
                                "(at most %d, %d from one address)", peer, total, self.max_connections,
                                self.max_per_source)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._release(source)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(source_of(str(client_address[0])))

    def _release(self, source: str) -> None:
        with self._open_lock:
            self._open[source] -= 1
            if self._open[source] <= 0:
                del self._open[source]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away, or spoke plain HTTP to the TLS port: a debug line, not a traceback."""
        log.debug("http %s: request failed", client_address[0], exc_info=True)
