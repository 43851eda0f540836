"""Flow control on unconfirmed answers (edge_agent/intake.py): the gate in
milliseconds, then an agent on a real broker whose PUBACKs are held back."""

from __future__ import annotations

import pytest

from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.intake import IntakeGate
from fogmesh.mqtt_framing import split_packets
from tests.ackhold import AckHoldingLink
from tests.waiting import wait_until


def test_the_gate_admits_tasks_until_unconfirmed_answers_reach_high():
    gate = IntakeGate(high=4, low=2)
    assert [gate.admits(n) for n in (0, 1, 2, 3)] == [True] * 4
    assert not gate.admits(4)


def test_a_closed_gate_stays_closed_until_unconfirmed_answers_are_down_to_low():
    gate = IntakeGate(high=4, low=2)
    gate.admits(4)
    assert [gate.admits(n) for n in (5, 4, 3)] == [False] * 3
    assert gate.admits(2)
    assert gate.admits(3)                    # open again: closes only at high
    assert gate.closings == 1


def test_a_gate_needs_low_below_high():
    with pytest.raises(ValueError):
        IntakeGate(high=2, low=2)


def test_split_packets_keeps_a_partial_packet_for_later():
    buffer = bytearray(b"\x40\x02\x00\x01" + b"\x30\x05\x00\x01t")
    assert split_packets(buffer) == [b"\x40\x02\x00\x01"]
    buffer += b"xy"
    assert split_packets(buffer) == [b"\x30\x05\x00\x01txy"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_agent_takes_no_task_while_its_answers_wait_for_the_brokers_confirmation(broker, root, agents):
    link = AckHoldingLink(broker.host, broker.port)
    try:
        agent = agents("gated", link.url, root, max_unconfirmed=6, concurrency=1)
        with FogClient(broker.url, root=root, retry_s=None) as device:
            assert device.send("echo", {"warm": True}).result(timeout=10).ok
            # The device can have the warm-up answer before the agent has its PUBACK.
            wait_until(lambda: agent.client.unconfirmed() == 0, timeout=10, what="the warm-up answer confirmed")
            link.hold()
            futures = [device.send("echo", {"n": n}) for n in range(30)]
            # Six answers go out unconfirmed; the next task waits unacknowledged at the agent.
            wait_until(lambda: agent.dispatcher.parked, timeout=10, what="the agent to stop taking tasks")
            answered = wait_until(lambda: (n := sum(f.done() for f in futures)) >= 6 and n, timeout=10,
                                  what="the six answers")
            assert answered == 6
            assert agent.client.unconfirmed() == 6
            link.release()
            replies = [f.result(timeout=20) for f in futures]
        assert all(r.ok for r in replies)
        assert sorted(r.value["n"] for r in replies) == list(range(30))
        assert device.duplicates == 0
    finally:
        link.close()
