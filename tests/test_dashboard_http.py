"""The dashboard's HTTP server against slow and many connections (issue #37:
a slowloris held it): in-process, real sockets from several loopback
addresses, no broker (what is tested here happens before a request reaches
the dashboard). The limits are made small so each test takes a second or
two; tests/test_dashboard_hostile.py runs the real process."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import pytest

from fogmesh.dashboard.http_server import DashboardHTTPServer
from fogmesh.dashboard.web import handler_class
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(30)

HEAD_TIMEOUT_S = 0.5


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[DashboardHTTPServer]:
    """A server whose request heads have ``HEAD_TIMEOUT_S`` (or the test's
    ``head_timeout_s`` mark), 4 connections in all and 2 per address."""
    mark = request.node.get_closest_marker("head_timeout_s")
    head_timeout_s = mark.args[0] if mark else HEAD_TIMEOUT_S
    handler = type("Handler", (handler_class(object()),), {"head_timeout_s": head_timeout_s})  # type: ignore[arg-type]
    http = DashboardHTTPServer(("127.0.0.1", 0), handler)
    http.max_connections, http.max_per_source = 4, 2
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield http
    finally:
        http.shutdown()
        http.server_close()
        thread.join(5)


def connect(server: DashboardHTTPServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=5, source_address=(source, 0))


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (an absence
    of data cannot be awaited otherwise: the wait is the verdict)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_request_head_that_trickles_in_is_cut_off_at_its_deadline(server):
    """Slowloris: a byte of the headers every 0.1 s never lets the idle timeout
    fire; the whole head (line, headers, body) has a deadline."""
    sock = connect(server)
    stop = threading.Event()

    def trickle() -> None:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while not stop.wait(0.1):         # the attack's pace: a byte each tenth of a second
                sock.sendall(b"a")
        except OSError:
            return

    sender = threading.Thread(target=trickle, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        assert closed_by_server(sock, within=5.0), "the server kept a trickling request open"
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 1.5
    finally:
        stop.set()
        sender.join(5)
        sock.close()


@pytest.mark.head_timeout_s(20.0)          # the connections below stay open, silent, through the test
def test_connections_are_capped_per_source_and_in_all_and_a_closed_one_frees_its_place(server):
    mine = [connect(server), connect(server)]
    others = [connect(server, "127.0.0.2"), connect(server, "127.0.0.2")]
    try:
        extra = connect(server)                                   # a third from 127.0.0.1
        assert closed_by_server(extra, within=2.0), "a third connection from one address was kept"
        beyond = connect(server, "127.0.0.3")                      # a fifth in all
        assert closed_by_server(beyond, within=2.0), "a connection past the total was kept"
        assert not any(closed_by_server(s, within=0.1) for s in mine + others)
        mine.pop().close()

        def admitted() -> bool:
            s = connect(server)
            kept = not closed_by_server(s, within=0.2)
            s.close() if not kept else mine.append(s)
            return kept
        wait_until(admitted, timeout=5, what="a place for 127.0.0.1 once it closed one")
    finally:
        for s in mine + others:
            s.close()
