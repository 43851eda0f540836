"""Tier 2: the agent's ``amqp`` dispatch without RabbitMQ. In-process agents
(their MQTT side on a real mosquitto) take tasks from an in-memory quorum
queue (tests/fake_queue.py, injected as ``AgentOptions.amqp_queue``) whose
committed answers go out over MQTT as ``amq.topic`` would send them; a
plain subscriber counts the replies per task id. The faults are scripted:
a node stopped under an agent holding tasks, a commit that fails, an agent
stopped and started again. (The same on a real 3-node cluster, slower:
tests/test_cluster.py.)"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import orjson
import pytest

from fogmesh.edge_agent.agent import Agent
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.messages import Task
from fogmesh.mqtt import MqttClient
from fogmesh.registry import Registry, TaskKind
from fogmesh.task_queue import QueuedTask
from fogmesh.topics import Topics
from tests.fake_queue import FakeQuorumQueue
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


def gated(args: Mapping[str, Any]) -> str:
    """Notes its run, then waits for the test to open the gate (a file: it runs in a worker process)."""
    with open(args["log"], "a") as f:
        f.write(args["n"] + "\n")
    gate, deadline = Path(args["gate"]), time.monotonic() + 30
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)                      # the gate is a file the test creates: polled
    return str(args["n"])


REGISTRY = Registry.from_entry_points().with_kinds(TaskKind("gated", gated, timeout_s=40))


class House:
    """The fake queue, the replies seen over MQTT, the runs the handlers noted."""

    def __init__(self, url: str, root: str, tmp: Path) -> None:
        self.url, self.root, self.topics = url, root, Topics(root)
        self.replies_to = f"{root}/replies/dev"
        self.gate, self.log = tmp / "gate", tmp / "runs"
        self.lock = threading.Lock()
        self.replies: list[dict[str, Any]] = []
        self.out = MqttClient(url)
        self.out.start(timeout=15)
        self.sub = MqttClient(url, on_message=self._reply)
        self.sub.start(timeout=15)
        self.sub.subscribe(self.replies_to)
        # amq.topic: what a transaction publishes reaches MQTT subscribers
        self.fake = FakeQuorumQueue(out=lambda topic, payload: self.out.publish(topic, payload, qos=1))

    def _reply(self, m: Any) -> None:
        with self.lock:
            self.replies.append(orjson.loads(m.payload))

    def agent(self, agent_id: str, *nodes: str, **options: Any) -> Agent:
        o = AgentOptions(root=self.root, concurrency=2, presence_period=1.0, registry=REGISTRY,
                         amqp=[f"fake://{n}" for n in nodes], amqp_queue=self.fake.factory, **options)
        return Agent(agent_id, self.url, o)

    def payload(self, n: str) -> bytes:
        return Task(id=n, kind="gated", reply_to=self.replies_to,
                    args={"n": n, "log": str(self.log), "gate": str(self.gate)}).encode()

    def task(self, n: str) -> None:
        """A device's task, as RabbitMQ routes it from MQTT into the queue."""
        self.fake.publish(self.topics.tasks, self.payload(n))

    def runs(self) -> Counter[str]:
        return Counter(self.log.read_text().split()) if self.log.exists() else Counter()

    def answered(self) -> Counter[str]:
        with self.lock:
            return Counter(r["id"] for r in self.replies)

    def workers(self) -> dict[str, set[str]]:
        with self.lock:
            return {r["id"]: {x["worker"] for x in self.replies if x["id"] == r["id"]} for r in self.replies}

    def settled(self, ids: list[str], timeout: float = 30) -> Counter[str]:
        """Once every id has a reply and the queue holds nothing: the replies per id."""
        wait_until(lambda: set(ids) <= set(self.answered()) and self.fake.counts() == (0, 0), timeout,
                   what=f"replies to {ids} and an empty queue (replies {self.answered()}, queue {self.fake.counts()})")
        time.sleep(0.5)                       # room for a late duplicate: an absence cannot be awaited
        return self.answered()

    def close(self) -> None:
        self.sub.stop()
        self.out.stop()


@pytest.fixture
def house(mosquitto_broker: Any, root: str, tmp_path: Path) -> Iterator[House]:
    h = House(mosquitto_broker.url, root, tmp_path)
    yield h
    h.close()


@pytest.fixture
def started() -> Iterator[Callable[[Agent], Agent]]:
    agents: list[Agent] = []

    def start(agent: Agent) -> Agent:
        agents.append(agent.start())
        return agent

    yield start
    for agent in agents:
        agent.stop(timeout=5)


def ids_of(payloads: list[bytes]) -> list[str]:
    return [orjson.loads(p)["id"] for p in payloads]


# -- the fake is a quorum queue ---------------------------------------------------------------

class Consumer:
    def __init__(self, fake: FakeQuorumQueue, *nodes: str, prefetch: int = 2) -> None:
        self.got: list[QueuedTask] = []
        self.changes: list[tuple[bool, int]] = []
        self.queue = fake.factory([f"fake://{n}" for n in nodes], root="q", on_task=self.got.append,
                                  on_connection=lambda up, n: self.changes.append((up, n)), prefetch=prefetch)
        self.queue.start(timeout=5)


def test_the_fake_gives_a_consumer_no_more_than_its_prefetch_and_takes_back_what_a_closed_connection_held():
    fake = FakeQuorumQueue()
    for n in range(3):
        fake.publish("q/tasks", f"t{n}".encode())
    first = Consumer(fake, "n1")
    wait_until(lambda: len(first.got) == 2, what="two deliveries")
    assert fake.counts() == (1, 2)                                 # the prefetch window is full
    second = Consumer(fake, "n2", prefetch=5)
    wait_until(lambda: len(second.got) == 1, what="the third to the second consumer")
    fake.stop_node("n1")                                          # the first one's node goes
    wait_until(lambda: len(second.got) == 3, what="the first one's tasks, redelivered")
    assert [(t.payload, t.redelivered) for t in second.got] == [(b"t2", False), (b"t0", True), (b"t1", True)]
    wait_until(lambda: first.changes[-1:] == [(False, 1)], what="the first one told its connection is gone")
    first.queue.stop()
    second.queue.stop()


def test_the_fake_commits_answers_and_acks_together_or_not_at_all():
    fake = FakeQuorumQueue()
    fake.publish("q/tasks", b"t0")
    c = Consumer(fake, "n1", "n2")
    wait_until(lambda: c.got, what="a delivery")
    told: list[bool] = []
    fake.fail_commits(1)
    c.queue.settle(c.got[0], [("q/replies", b"a0")], told.append)
    wait_until(lambda: told == [False] and len(c.got) == 2, what="a failed commit and the task back")
    assert fake.transactions == [] and c.got[1].redelivered and c.changes[:3] == [(True, 1), (False, 1), (True, 2)]
    c.queue.settle(c.got[0], [("q/replies", b"stale")], told.append)   # a tag of the closed connection
    c.queue.settle(c.got[1], [("q/replies", b"a0")], told.append)
    wait_until(lambda: len(told) == 3, what="both settles told")
    assert told == [False, False, True] and fake.transactions == [([b"t0"], [("q/replies", b"a0")])]
    assert fake.errors == [] and fake.counts() == (0, 0)
    c.queue.stop()


# -- the agent on it --------------------------------------------------------------------------------

def test_two_agents_answer_each_task_from_the_queue_once_each_answer_committed_with_its_ack(house, started):
    started(house.agent("a", "n1", "n2"))
    started(house.agent("b", "n2", "n1"))
    house.gate.touch()
    ids = [f"t{n}" for n in range(30)]
    for n in ids:
        house.task(n)
    assert house.settled(ids) == Counter({n: 1 for n in ids})
    assert house.runs() == Counter({n: 1 for n in ids})
    for acked, published in house.fake.transactions:          # the answer and its task's ack: one transaction
        assert sorted(ids_of(acked)) == sorted(orjson.loads(p)["id"] for _, p in published)
    assert {w for ws in house.workers().values() for w in ws} == {"a", "b"} and house.fake.errors == []


def test_tasks_held_by_an_agent_whose_node_stops_go_back_redelivered_and_another_agent_answers_them_once(
        house, started):
    a = started(house.agent("a", "n1"))
    ids = [f"t{n}" for n in range(4)]
    for n in ids:
        house.task(n)
    wait_until(lambda: house.fake.counts() == (0, 4) and len(house.runs()) == 2,
               what="a holding the four, running two")
    b = started(house.agent("b", "n2"))
    house.fake.stop_node("n1")                                  # a's only node: a lets go of the four
    wait_until(lambda: b.core is not None and b.core.held == 4, what="b holding the four")
    house.gate.touch()
    assert house.settled(ids) == Counter({n: 1 for n in ids})
    assert house.workers() == {n: {"b"} for n in ids}
    assert a.state == "online" and house.fake.errors == []      # a waits for its node, alive


def test_a_failed_commit_withdraws_the_answer_and_the_task_back_is_answered_from_the_store_not_run_again(
        house, started):
    a = started(house.agent("a", "n1", "n2"))
    house.gate.touch()
    house.fake.fail_commits(1)
    house.task("t0")
    assert house.settled(["t0"]) == Counter({"t0": 1})
    assert house.runs() == Counter({"t0": 1}) and house.fake.failed_commits == 1
    [(acked, published)] = house.fake.transactions
    assert ids_of(acked) == ["t0"] and ids_of([p for _, p in published]) == ["t0"]
    assert a.queue_intake is not None and a.queue_intake.queue.url == "n2"      # on the next node now
    # The queue's withdrawal is no event of the MQTT task link: the dispatcher's count of
    # those still balances (else tasks on that link are never again stepped where they arrive).
    turns = a.dispatcher.turns
    assert turns._queued == turns._stepped


def test_an_agent_stopped_with_queue_tasks_held_and_started_again_resumes_only_its_direct_task(house, started):
    """The queue gives what a stopped agent held back to the others; its
    journal keeps only its direct task (MQTT), so started again it runs and
    answers none of the queue's a second time (tests/test_cluster.py's kill)."""
    a = house.agent("a", "n1")
    a.start()
    ids = [f"t{n}" for n in range(4)]
    for n in ids:
        house.task(n)
    house.out.publish(house.topics.agent_tasks("a"), house.payload("d0"), qos=1)
    wait_until(lambda: house.fake.counts() == (0, 4) and a.core is not None and a.core.held == 5,
               what="a holding four tasks from the queue and its direct one")
    b = started(house.agent("b", "n2"))
    a.stop(timeout=0.3)                                         # gone with all five unanswered
    assert a.journal is not None and list(a.journal.unfinished) == ["d0"]
    wait_until(lambda: b.core is not None and b.core.held == 4, what="b holding the four")
    again = started(house.agent("a", "n1"))
    assert again.journal is not None and list(again.journal.unfinished) == ["d0"]
    house.gate.touch()
    assert house.settled([*ids, "d0"]) == Counter({n: 1 for n in [*ids, "d0"]})
    assert house.workers() == {**{n: {"b"} for n in ids}, "d0": {"a"}}
