"""Tier 1 (pure): bounded memory, claim delays, presence timing, broker URLs, registry."""

import random

import pytest

from fogmesh import codec
from fogmesh.announcements import Presence
from fogmesh.claims import claim_delay
from fogmesh.edge_agent.actions import Counters
from fogmesh.edge_agent.announcer import Announcer
from fogmesh.edge_agent.peers import PeerRegistry
from fogmesh.edge_agent.presence import HostStats, build_presence, presence_due, presence_pace
from fogmesh.edge_agent.recent import RecentMap
from fogmesh.errors import UnknownKind
from fogmesh.mqtt import BrokerUrl
from fogmesh.registry import Registry, TaskKind
from tests.coreio import on_finished, on_message


def test_recent_map_keeps_the_first_value():
    m = RecentMap(max_items=10, ttl_s=60)
    assert m.add("k", "a1", 0.0) == "a1"
    assert m.add("k", "a2", 1.0) == "a1"


def test_recent_map_is_bounded_by_count():
    m = RecentMap(max_items=3, ttl_s=60)
    for i in range(10):
        m.add(str(i), i, 0.0)
    assert len(m) == 3 and "9" in m and "0" not in m


def test_recent_map_forgets_by_age():
    m = RecentMap(max_items=10, ttl_s=5)
    m.add("old", 1, 0.0)
    assert m.get("old", 4.0) == 1
    assert m.get("old", 6.0) is None


def test_idle_agents_claim_immediately_and_busy_ones_later_but_bounded():
    assert claim_delay(queued=0, running=0, capacity=2) == 0
    assert 0 < claim_delay(queued=3, running=2, capacity=2) < claim_delay(queued=30, running=2, capacity=2)
    assert claim_delay(queued=10_000, running=2, capacity=2) == 0.05


def presence(queue=0, state="online"):
    return build_presence(agent="a", state=state, now=0.0, host=HostStats(), queued=queue, running=0,
                          capacity=4, kinds=("echo",), dispatch="shared")


def test_presence_is_sent_first_and_then_periodically():
    assert presence_due(None, presence(), last_sent=0, now=0, period=5)
    assert not presence_due(presence(), presence(), last_sent=0, now=1, period=5)
    assert presence_due(presence(), presence(), last_sent=0, now=5, period=5)


def test_presence_is_sent_early_on_significant_change_but_not_in_a_burst():
    assert presence_due(presence(0), presence(3), last_sent=0, now=0.5, period=5)
    assert not presence_due(presence(0), presence(3), last_sent=0, now=0.1, period=5)


def test_a_small_site_announces_at_the_configured_period():
    pace = presence_pace(base_period=5.0, site=15)
    assert (pace.period, pace.min_gap) == (5.0, pytest.approx(0.6))
    assert presence_pace(base_period=5.0, site=5).min_gap == 0.2


@pytest.mark.parametrize("site", [10, 50, 100, 200, 1000])
def test_what_each_agent_receives_stays_flat_as_the_site_grows(site):
    pace = presence_pace(base_period=5.0, site=site)
    assert site / pace.period <= 3.0          # heartbeats per second, from the whole site
    assert site / pace.min_gap <= 25.0        # change-driven presence per second, at most


def test_a_peer_announcing_a_long_period_is_live_for_three_of_them():
    peers = PeerRegistry(me="me", stale_after=15.0)
    peers.update(Presence(agent="p", state="online", ts=0.0, period=50.0), now=0.0)
    assert peers.is_live("p", 149.0) and not peers.is_live("p", 151.0)
    peers.update(Presence(agent="q", state="online", ts=0.0), now=0.0)       # says no period
    assert not peers.is_live("q", 16.0)


class _Site:
    """What the announcer reads of the core: its counters, load and peers."""

    def __init__(self, peers: PeerRegistry) -> None:
        self.peers, self.counters, self.queued, self.running, self.epoch = peers, Counters(), 0, 0, 0

    def handle(self, event: object, now: float) -> list[object]:     # the battery read: nothing to do here
        return []


class _NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class _Host:
    def read(self, *, running: int) -> HostStats:
        return HostStats()


def test_an_agent_at_a_growing_site_announces_its_longer_period_before_keeping_it():
    sent: list[Presence] = []
    peers = PeerRegistry(me="a", stale_after=15.0)
    ann = Announcer(agent_id="a", monitor=_Host(), capacity=1, kinds=("echo",), period=5.0,
                    wall_clock=lambda: 0.0, send=lambda b: sent.append(Presence.from_dict(codec.decode(b))),
                    rng=_NoJitter())
    site = _Site(peers)
    ann.maybe(0.0, site, "online")
    assert sent[-1].period == 5.0
    for n in range(199):
        peers.update(Presence(agent=f"p{n}", state="online", ts=0.0), now=0.0)
    assert ann.due_at == 5.0                 # peers expect the next one within the period they were told
    ann.maybe(5.0, site, "online")
    assert sent[-1].period == pytest.approx(200 / 3) and ann.due_at == pytest.approx(5 + 200 / 3)


def test_newcomers_make_an_agent_announce_again_once_per_change_gap_not_once_each():
    sent: list[bytes] = []
    peers = PeerRegistry(me="a", stale_after=15.0)
    ann = Announcer(agent_id="a", monitor=_Host(), capacity=1, kinds=("echo",), period=5.0,
                    wall_clock=lambda: 0.0, send=sent.append, rng=_NoJitter())
    site = _Site(peers)
    ann.maybe(0.0, site, "online")
    for t in (0.05, 0.1, 0.15):             # three newcomers within the gap
        ann.newcomer()
        ann.maybe(t, site, "online")
    assert len(sent) == 1 and ann.due_at == pytest.approx(0.2)
    ann.maybe(0.2, site, "online")
    assert len(sent) == 2 and ann.due_at == pytest.approx(5.2)


def test_a_change_during_a_burst_is_looked_for_once_per_gap_and_a_skipped_look_is_scheduled():
    sent: list[Presence] = []
    ann = Announcer(agent_id="a", monitor=_Host(), capacity=4, kinds=("echo",), period=5.0,
                    wall_clock=lambda: 0.0, send=lambda b: sent.append(Presence.from_dict(codec.decode(b))),
                    rng=_NoJitter())
    site = _Site(PeerRegistry(me="a", stale_after=15.0))
    ann.maybe(0.0, site, "online")
    looked = ann.checked_at
    for step in range(1, 40):                # a burst of steps, 5 ms apart, nothing changed yet
        ann.maybe(step * 0.005, site, "online")
    assert ann.checked_at == looked and ann.wake_at == pytest.approx(0.2)
    site.queued = 3                          # the burst left work queued
    ann.maybe(0.21, site, "online")          # the scheduled look finds it
    assert len(sent) == 2 and sent[-1].queue == 3 and ann.wake_at == pytest.approx(5.21)


def test_heartbeats_come_a_random_share_early_never_late():
    ann = Announcer(agent_id="a", monitor=_Host(), capacity=1, kinds=("echo",), period=5.0,
                    wall_clock=lambda: 0.0, send=lambda b: None, rng=random.Random(7))
    site = _Site(PeerRegistry(me="a", stale_after=15.0))
    dues = []
    for _ in range(20):
        ann.announce(0.0, site, "online")
        dues.append(ann.due_at)
    assert all(0.85 * 5.0 <= d <= 5.0 for d in dues) and len(set(dues)) > 1


@pytest.mark.parametrize("url,expected", [
    ("mqtt://h:1884", BrokerUrl("h", 1884)),
    ("h", BrokerUrl("h", 1883)),
    ("mqtts://user@h", BrokerUrl("h", 8883, tls=True, username="user")),
    ("ws://h:9001", BrokerUrl("h", 9001, websocket=True)),
    ("wss://user@h/ws?ca=ca.crt", BrokerUrl("h", 443, tls=True, username="user", ca_file="ca.crt",
                                             websocket=True, path="/ws")),
])
def test_broker_urls(url, expected):
    assert BrokerUrl.parse(url) == expected


def test_broker_url_with_wrong_scheme_says_what_is_expected():
    with pytest.raises(ValueError, match="mqtt://, mqtts://, ws:// or wss://"):
        BrokerUrl.parse("http://h")


def test_a_websocket_url_prints_back_with_its_scheme_and_a_non_default_path():
    assert str(BrokerUrl.parse("wss://u@h:8884")) == "wss://u@h:8884"
    assert str(BrokerUrl.parse("ws://h:9001/ws")) == "ws://h:9001/ws"


def test_builtin_kinds_come_from_entry_points():
    assert {"echo", "sum", "stats", "sleep", "sha256"} <= set(Registry.from_entry_points().names())


def test_unknown_kind_lookup_names_the_known_ones():
    with pytest.raises(UnknownKind, match="echo"):
        Registry({"echo": TaskKind("echo", dict)}).get("nope")


def test_kind_timeouts_can_be_overridden():
    r = Registry.from_entry_points().with_timeouts({"sleep": 2})
    assert r.get("sleep").timeout_s == 2


# -- per-device rate limits ----------------------------------------------------------------
def test_a_device_may_burst_then_is_held_to_its_rate():
    from fogmesh.edge_agent.ratelimit import RateLimiter
    limiter = RateLimiter(10.0)                      # bursts of 20
    assert sum(limiter.allow("d", 0.0) for _ in range(25)) == 20
    assert limiter.allow("d", 0.05) is False         # half a token back
    assert limiter.allow("d", 0.1) is True
    assert limiter.allow("other", 0.1) is True       # each device has its own bucket


def test_the_rate_limiter_forgets_old_devices_so_made_up_ids_cannot_grow_it():
    from fogmesh.edge_agent.ratelimit import RateLimiter
    limiter = RateLimiter(1.0, max_devices=100)
    for i in range(10_000):
        limiter.allow(f"d{i}", 0.0)
    assert len(limiter._buckets) == 100


def test_a_device_over_its_rate_gets_busy_errors_not_runs():
    import orjson

    from fogmesh.edge_agent.actions import AgentConfig, Publish
    from fogmesh.edge_agent.core import AgentCore
    from fogmesh.messages import Task
    from fogmesh.registry import Registry
    from fogmesh.topics import Topics
    c = AgentCore(AgentConfig(agent_id="a", topics=Topics("t"), device_rate=1.0), Registry.from_entry_points())
    codes = []
    for i in range(4):
        out = on_message(c, "t/tasks", Task(id=f"k{i}", kind="echo", reply_to="t/replies/d", device="d").encode(),
                           i, 0.0)
        out += on_finished(c, f"k{i}", 0.0, result={})
        codes += [orjson.loads(a.payload).get("error", {}).get("code", "ok") for a in out
                  if isinstance(a, Publish) and a.topic == "t/replies/d"]
    assert codes == ["ok", "ok", "busy", "busy"] and c.counters.rate_limited == 2


class _Sent:
    """A publish's delivery as the bridge sees it: confirmed or not yet."""

    def __init__(self) -> None:
        self.done = False

    def confirmed(self) -> bool:
        return self.done


def test_a_cloud_result_is_acknowledged_only_once_the_edge_broker_has_it():
    from fogmesh.cloud_bridge.forwarding import Forwarding
    forwarding, first, second = Forwarding(), _Sent(), _Sent()
    forwarding.add(first, "cloud-msg-1", "k1")      # type: ignore[arg-type]
    forwarding.add(second, "cloud-msg-2", "k2")     # type: ignore[arg-type]
    assert forwarding.arrived() == [] and "k1" in forwarding
    second.done = True
    assert forwarding.arrived() == [("cloud-msg-2", "k2")]
    assert "k2" not in forwarding and "k1" in forwarding    # a redelivered k1 is still a duplicate
    first.done = True
    assert forwarding.arrived() == [("cloud-msg-1", "k1")] and forwarding.arrived() == []


def test_variable_byte_integers_round_trip_at_every_width():
    from fogmesh.mqtt_framing import encode_varint, read_varint
    for n in (0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455):
        data = encode_varint(n)
        assert read_varint(b"x" + data, 1) == (n, 1 + len(data))
    with pytest.raises(ValueError):
        read_varint(b"\x80\x80", 0)


def test_a_stream_gives_up_its_whole_packets_and_keeps_the_start_of_the_next():
    from fogmesh.mqtt_framing import encode_varint, split_packets
    big = b"\x30" + encode_varint(200) + b"p" * 200
    stream = bytearray(b"\x40\x02\x00\x01" + big + b"\x40\x02\x00")
    assert split_packets(stream) == [b"\x40\x02\x00\x01", big]
    assert stream == b"\x40\x02\x00"
    stream += b"\x02"
    assert split_packets(stream) == [b"\x40\x02\x00\x02"] and stream == b""


def test_the_fleet_view_lists_each_agents_deployment_report():
    from fogmesh.fleet import FleetView
    from fogmesh.topics import Topics
    view = FleetView(Topics("fog/v1"))
    assert "fog/v1/deploy/reported/+" in view.filters
    view.on_message("fog/v1/deploy/reported/pi-1", b'{"agent": "pi-1", "state": "downloading", "progress": 0.5, '
                    b'"desired_serial": 9, "applied_serial": 8, "bundles": {"plantcare": {"version": "1.0"}}}')
    view.on_message("fog/v1/deploy/reported/pi-2", b'{"no agent": 1}')
    rows = view.rows(0.0)["deployments"]
    assert [(d["agent"], d["state"], d["bundles"], d["progress"]) for d in rows] == [
        ("pi-1", "downloading", "plantcare 1.0", 0.5)]


def test_a_broker_url_may_list_the_nodes_of_a_cluster():
    from fogmesh.broker_url import BrokerUrl
    u = BrokerUrl.parse("mqtts://pi-1@node1:8883,node2:8884,mqtts://pi-1@node3?ca=/ca.crt")
    assert u.nodes == (("node1", 8883), ("node2", 8884), ("node3", 8883)) and u.username == "pi-1" and u.tls
    assert str(BrokerUrl.parse("mqtt://a:1,b:2")) == "mqtt://a:1,b:2"
    import pytest
    with pytest.raises(ValueError):
        BrokerUrl.parse("mqtt://a:1,mqtts://b:2")
