"""Why an AMQP node does not answer, in words: pika's exceptions (layers of
wrappers, often with empty messages) mapped to a reason at the boundary,
on real sockets: a port with nothing listening, a port that takes the
connection and says nothing (a node still starting), one that closes it
(not an AMQP server), mosquitto's MQTT port. Cheap: no RabbitMQ here (the
cluster's own cases are in tests/test_cluster.py)."""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest

from fogmesh.amqp_queue import TaskQueue, amqp_reason, probe_queue
from fogmesh.broker.ports import free_port
from fogmesh.errors import ConnectError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that completes TCP and never says a word (the kernel accepts for it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def closing_port() -> Iterator[int]:
    """A port that hangs up on whatever connects."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    yield s.getsockname()[1]
    s.close()


def reason(url: str, timeout: float = 2.0) -> str:
    with pytest.raises(ConnectError) as caught:
        probe_queue(url, root="fog/v1", timeout=timeout)
    return str(caught.value)


def test_a_port_with_nothing_listening_is_a_refused_connection_not_an_empty_error(capfd) -> None:
    said = reason(f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert said.startswith("connection refused") and "is the node running" in said
    assert "Traceback" not in capfd.readouterr().err          # pika's own error log is held back


def test_a_port_that_never_answers_the_handshake_says_so_within_the_timeout(silent_port: int) -> None:
    said = reason(f"amqp://guest:guest@127.0.0.1:{silent_port}/", timeout=1.0)
    assert "no AMQP handshake came within 1 s" in said


def test_a_server_that_is_not_amqp_is_named(closing_port: int, mosquitto_broker) -> None:
    assert "not an AMQP 0-9-1 server" in reason(f"amqp://guest:guest@127.0.0.1:{closing_port}/")
    mqtt_port = mosquitto_broker.url.rsplit(":", 1)[1]
    assert "not an AMQP 0-9-1 server" in reason(f"amqp://guest:guest@127.0.0.1:{mqtt_port}/")


def test_a_url_that_is_not_an_amqp_url_is_a_reason_not_a_crash() -> None:
    assert "amqp://USER:PASS@HOST:5672/" in reason("amqp://guest:guest@127.0.0.1:notaport/")


def test_an_unresolvable_host_and_an_unknown_error_keep_their_words() -> None:
    assert "cannot resolve the host name" in reason("amqp://guest:guest@no-such-host.invalid:5672/")
    assert amqp_reason(RuntimeError("odd")) == "RuntimeError: odd"
    assert amqp_reason(KeyError()) == "KeyError"


def test_the_task_queue_survives_a_node_that_takes_the_connection_and_never_answers(silent_port: int) -> None:
    """A node still starting after a power cut takes TCP and sends nothing; the
    agent's queue thread gives up on it after its timeout and tries again (the
    next node of the list), rather than dying with the handshake timeout; the
    agent's start says why no node took the queue."""
    queue = TaskQueue([f"amqp://guest:guest@127.0.0.1:{silent_port}/"], root="fog/v1", on_task=lambda t: None,
                      connect_timeout_s=0.5, retry_s=0.1)
    with pytest.raises(ConnectError) as caught:
        queue.start(timeout=3.0)
    assert "no AMQP handshake came within 0.5 s" in str(caught.value)
