"""Tier 3 (real brokers): agents place work on each other."""

import time

import orjson
from waiting import wait_until

from fogmesh.announcements import Battery, Presence
from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.agent import Agent
from fogmesh.edge_agent.battery import BatteryModel
from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.edge_agent.placement import EnergyPolicy, LeastLoadedPolicy
from fogmesh.mqtt import MqttClient
from fogmesh.registry import Registry
from fogmesh.topics import Topics


def sees(agent, peer_id, pred=lambda p: True):
    def check():
        p = agent.core.peers.get(peer_id)
        return p is not None and agent.core.peers.is_live(peer_id, agent.clock()) and pred(p)
    return check


def direct(client: FogClient, agent_id: str, kind: str, args: dict, *, weight=None):
    """Submit to one agent's direct topic (as a camera bound to its own Pi does)."""
    return client.send(kind, args, weight=weight, agent=agent_id)


def battery_monitor(percent):
    return HostMonitor(battery_model=BatteryModel(percent=percent, idle_w=0.0, task_w=0.0))


def test_a_middleweight_task_lands_on_the_least_loaded_peer(broker, root, agents):
    opts = dict(concurrency=1, presence_period=0.3, policy=LeastLoadedPolicy())
    hot = agents("hot", broker.url, root, **opts)
    agents("busy", broker.url, root, **opts)
    agents("idle", broker.url, root, **opts)
    with FogClient(broker.url, root=root) as client:
        block_hot = direct(client, "hot", "sleep", {"ms": 1500})
        block_busy = direct(client, "busy", "sleep", {"ms": 1500})
        wait_until(sees(hot, "busy", lambda p: p.presence.running == 1), what="busy's presence")
        wait_until(sees(hot, "idle"), what="idle's presence")
        wait_until(lambda: hot.core.running == 1, what="hot running")
        result = direct(client, "hot", "sha256", {"size": 1000}, weight="medium").result(timeout=15)
        assert (result.worker, result.tier) == ("idle", "fog")
        assert result.ok and result.value["bytes"] == 1000
        block_hot.result(timeout=15), block_busy.result(timeout=15)
        assert client.duplicates == 0


def test_energy_offloads_to_the_charged_peer_and_takes_work_back_above_60(broker, root, agents):
    opts = dict(concurrency=2, presence_period=0.3)
    low = agents("low", broker.url, root, policy=EnergyPolicy(), monitor=battery_monitor(40), **opts)
    agents("full", broker.url, root, policy=EnergyPolicy(), monitor=battery_monitor(80), **opts)
    agents("mid", broker.url, root, policy=EnergyPolicy(), monitor=battery_monitor(65), **opts)
    wait_until(sees(low, "full", lambda p: p.battery_percent == 80), what="full's battery")
    wait_until(sees(low, "mid", lambda p: p.battery_percent == 65), what="mid's battery")
    with FogClient(broker.url, root=root) as client:
        first = [direct(client, "low", "sha256", {"size": 100}, weight="medium").result(timeout=15)
                 for _ in range(5)]
        assert {r.worker for r in first} == {"full"} and {r.tier for r in first} == {"fog"}
        low.monitor.set_battery(61)
        wait_until(lambda: low.core.battery == 61, what="low's battery reading")
        back = [direct(client, "low", "sha256", {"size": 100}, weight="medium").result(timeout=15)
                for _ in range(5)]
        assert {r.worker for r in back} == {"low"} and {r.tier for r in back} == {"local"}


class SilentPeer:
    """A bad peer: announces itself idle and fully charged, accepts every offer,
    never answers. Also sends garbage to the other agents' inboxes."""

    def __init__(self, url, root):
        self.topics = Topics(root)
        self.offers = 0
        self.client = MqttClient(url, client_id=f"silent-{root.replace('/', '-')}", on_message=self._on)
        self.client.start()
        self.client.subscribe(self.topics.agent_inbox("silent"))
        p = Presence(agent="silent", state="online", ts=time.time(), capacity=64,
                     kinds=Registry.from_entry_points().names(), battery=Battery(100.0, True))
        self.client.publish(self.topics.presence("silent"), p.encode(), retain=True)

    def _on(self, m):
        offer = orjson.loads(m.payload)
        if offer.get("op") == "offer":
            self.offers += 1
            self.client.publish(self.topics.agent_inbox(offer["origin"]), orjson.dumps(
                {"op": "accept", "offer": offer["offer"], "task": offer["task"]["id"], "agent": "silent"}))

    def close(self):
        self.client.publish(self.topics.presence("silent"), b"", retain=True)
        self.client.stop()


def test_a_peer_that_accepts_and_never_answers_costs_a_lease_not_a_task(broker, root, agents):
    registry = Registry.from_entry_points().with_timeouts({"sha256": 1.0})
    silent = SilentPeer(broker.url, root)
    try:
        origin = agents("origin", broker.url, root, concurrency=1, presence_period=0.3,
                        registry=registry, policy=LeastLoadedPolicy(), offer_lease_s=0.5)
        wait_until(sees(origin, "silent"), what="the silent peer's presence")
        with FogClient(broker.url, root=root) as client:
            blocker = direct(client, "origin", "sleep", {"ms": 300})
            wait_until(lambda: origin.core.running == 1, what="origin busy")
            t0 = time.monotonic()
            r = direct(client, "origin", "sha256", {"size": 10}, weight="medium").result(timeout=15)
            assert r.ok and r.worker == "origin"
            assert time.monotonic() - t0 >= 1.0          # it waited out the lease
            assert silent.offers == 1 and origin.core.counters.leases_expired == 1
            blocker.result(timeout=5)
            # garbage on the inbox costs nothing
            for junk in (b"{oops", b'{"op": "result", "offer": "x", "task": "y", "agent": "z"}', b"[]"):
                silent.client.publish(Topics(root).agent_inbox("origin"), junk)
            assert client.submit("echo", {"ok": 1}, timeout=10).value == {"ok": 1}
            wait_until(lambda: origin.core.counters.bad_inbox == 3, what="garbage counted")
    finally:
        silent.close()


def test_a_drained_agent_finishes_its_work_announces_draining_and_leaves(broker, root, agents):
    leaving = Agent("leaving", broker.url, AgentOptions(root=root, concurrency=1, presence_period=0.3)).start()
    agents("staying", broker.url, root, concurrency=1, presence_period=0.3)
    states = []
    watcher = MqttClient(broker.url, on_message=lambda m: states.append(orjson.loads(m.payload)["state"])
                         if m.payload else None)
    watcher.start()
    watcher.subscribe(Topics(root).presence("leaving"))
    with FogClient(broker.url, root=root) as client:
        held = direct(client, "leaving", "sleep", {"ms": 500})
        wait_until(lambda: leaving.core.running == 1, what="leaving busy")
        watcher.publish(Topics(root).agent_control("leaving"), b'{"op": "drain"}')
        assert held.result(timeout=10).worker == "leaving"
        assert leaving.wait(15)
        wait_until(lambda: states and states[-1] == "offline", what="offline presence")
        assert "draining" in states
        assert client.submit("echo", {"n": 1}, timeout=10).worker == "staying"
    watcher.stop()
