"""Shared fixtures: real brokers on free loopback ports, a unique topic root per test.

Nothing here mocks a broker or paho: the ``broker`` fixture is a real
mosquitto process or a real embedded amqtt broker process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port, wait_port
from fogmesh.broker.processes import stop_processes
from fogmesh.edge_agent.agent import Agent
from fogmesh.edge_agent.options import AgentOptions


@dataclass
class RunningBroker:
    name: str
    url: str
    host: str
    port: int


class AmqttProcess:
    """The embedded broker as its own process, started through the real CLI."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AmqttProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fogmesh", "broker", "--port", str(self.port), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port("127.0.0.1", self.port, 20):
            self.stop()
            raise RuntimeError("embedded broker did not start")
        return self

    def stop(self) -> None:
        stop_processes([self.proc])


@pytest.fixture(scope="session", autouse=True)
def no_dashboard_users_of_this_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A dashboard started by a test reads the users file the test gives it,
    never the one of whoever runs the tests (~/.config/fogmesh/dashboard-users)."""
    old = os.environ.get("FOGMESH_DASHBOARD_USERS")
    os.environ["FOGMESH_DASHBOARD_USERS"] = str(tmp_path_factory.mktemp("dashboard") / "no-users")
    yield
    if old is None:
        os.environ.pop("FOGMESH_DASHBOARD_USERS", None)
    else:
        os.environ["FOGMESH_DASHBOARD_USERS"] = old


@pytest.fixture(scope="session", autouse=True)
def agent_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agent journals of this test session (and its subprocesses) go to a temp dir."""
    old = os.environ.get("FOGMESH_STATE_DIR")
    os.environ["FOGMESH_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        os.environ.pop("FOGMESH_STATE_DIR", None)
    else:
        os.environ["FOGMESH_STATE_DIR"] = old


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[RunningBroker]:
    m = Mosquitto().start()
    yield RunningBroker("mosquitto", m.url, m.host, m.port)
    m.cleanup()


@pytest.fixture(scope="session")
def amqtt_broker() -> Iterator[RunningBroker]:
    a = AmqttProcess().start()
    yield RunningBroker("amqtt", f"mqtt://127.0.0.1:{a.port}", "127.0.0.1", a.port)
    a.stop()


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest) -> RunningBroker:
    """Each integration test runs against both real brokers."""
    return request.getfixturevalue(f"{request.param}_broker")


@pytest.fixture
def root() -> str:
    """A unique topic root per test, so tests sharing a broker never see each other."""
    return f"test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    """Start in-process agents; all are stopped at teardown."""
    started: list[Agent] = []

    def start(agent_id: str, url: str, root: str, **options: object) -> Agent:
        options.setdefault("concurrency", 2)
        options.setdefault("presence_period", 1.0)
        agent = Agent(agent_id, url, AgentOptions(root=root, **options)).start()  # type: ignore[arg-type]
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop(timeout=5)


@pytest.fixture
def unique_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker_name(request: pytest.FixtureRequest) -> str:
    """For tests that start (and restart) their own broker process of each kind."""
    return request.param


# -- raw MQTT connections (test_mqtt_conformance*.py) ------------------------------------------
@pytest.fixture
def lacking(request, broker):
    """``lacking(name, reason)``: this broker lacks the behaviour the test checks:
    the test must fail there (strict xfail), and says why; ``strict=False``
    where the broker has it only some of the time."""
    def mark(name: str, reason: str, *, strict: bool = True) -> None:
        if broker.name == name:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=strict))
    return mark


@pytest.fixture
def client(broker, root):
    """``client(name)``: a raw connection (not yet CONNECTed); all closed at teardown."""
    from rawmqtt import RawClient
    made: list[RawClient] = []
    tag = uuid.uuid4().hex[:8]

    def make(name: str) -> RawClient:
        c = RawClient(broker.port, f"{name}-{tag}")
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
