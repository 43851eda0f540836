"""Tier 3 (a real mosquitto, agents as ``fogmesh agent`` processes): no message
can take a process down (issue #37). For 20 s a stream of hostile messages
on every topic of topics.md (some retained) meets two agents while a
fire-and-forget device sends valid tasks: every process stays alive, every
valid task is answered once, ``fogmesh monitor --once`` works and shows no
forged row, every bad message is answered (a dead letter or an error reply)
or counted as refused by each agent that got it, exactly as the decoders
say, and the agents log it in one line a minute, not one per message.
``fogmesh bench hostile --seconds 600`` runs the same for longer."""

from __future__ import annotations

import threading

import pytest

from fogmesh.bench.hostile import HostileSite
from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient
from tests.fire_and_forget import Device
from tests.fuzzing import catalogue

SECONDS = 20.0


@pytest.mark.timeout(240)
def test_hostile_messages_on_every_topic_take_no_process_down_and_every_valid_task_is_answered_once(tmp_path):
    site = HostileSite(tmp_path, agents=("h1", "h2"))
    device = Device(site.url, site.root)
    try:
        sender = threading.Thread(target=device.send, args=(int(SECONDS * 30),), kwargs={"per_s": 30.0})
        sender.start()
        hostile = site.flood(SECONDS / 2, rate=60.0)
        code, rows, said = site.monitor()                 # while the stream goes on
        assert code == 0, said
        assert sorted(a["agent"] for a in rows["agents"]) == ["h1", "h2"]
        hostile += site.flood(SECONDS / 2, rate=60.0)
        sender.join()

        lost, doubled = device.settle(timeout=90)
        assert (lost, doubled) == ([], [])
        assert site.alive() == {"h1": True, "h2": True}
        counts = site.settled()
        assert {name: got for name, (got, _) in counts.items()} == {name: want for name, (_, want) in counts.items()}
        assert counts["answers"][0] > 50 and all(counts[f"{a} refused"][0] > 50 for a in site.ids), counts

        code, rows, said = site.monitor()
        assert code == 0 and sorted(a["agent"] for a in rows["agents"]) == ["h1", "h2"], said
        for a in site.ids:      # one line at once, at most one more a minute: not one per bad message
            assert 1 <= len(site.refusal_lines(a)) <= 2, site.refusal_lines(a)
            assert site.log_lines(a) < 60, site.agents.log(a)[-3000:]
        assert hostile > 0.9 * SECONDS * 60
    finally:
        device.close()
        site.close()


@pytest.mark.timeout(150)
def test_the_catalogue_through_a_live_agents_dispatcher_leaves_it_answering(mosquitto_broker, root, agents):
    """Each wrong value in each field of each document, on every topic, with
    odd and over-long id levels, through the real shell (paho, the
    dispatcher, the core, the announcer) of an in-process agent."""
    agent = agents("a1", mosquitto_broker.url, root)
    sender = MqttClient(mosquitto_broker.url)
    sender.start()
    try:
        sent = [sender.publish(topic, payload, qos=1) for topic, payload in
                catalogue(root, names=("a1", "a2", "x" * 200, "", "sp ace"))]
        assert all(d is not None and d.wait(30) for d in sent)
        with FogClient(mosquitto_broker.url, root=root) as client:    # behind some 18 MB of garbage: on a
            assert client.submit("echo", {"still": "here"}, timeout=60).value == {"still": "here"}   # loaded box, slow
        assert agent.fatal is None and agent.core is not None and agent.core.counters.refused > 100
    finally:
        sender.stop()
