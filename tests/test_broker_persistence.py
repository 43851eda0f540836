"""Tier 3 (real brokers, restarted): what a broker keeps across its own
restart, on mosquitto (its persistence file) and on the embedded broker (its
state file, ``fogmesh broker --persistence DIR``) alike: persistent
sessions and their subscriptions (``$share`` ones too), retained messages,
messages queued for an absent client and messages in flight. The clients are
raw MQTT (``rawmqtt.py``) so that nothing but the broker remembers."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
import uuid

import pytest
from rawmqtt import PUBACK, RawClient
from waiting import wait_until

from fogmesh.bench.faultkit import BrokerProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def site(broker_name, tmp_path):
    """A broker of each kind that the test can stop, kill and start again."""
    b = BrokerProcess(broker_name, tmp_path).start()
    yield b
    b.close()


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:8]


def connected(site, name, *, clean=False):
    c = RawClient(site.port, name)
    return c, c.connect(clean=clean)


def restarted(site, *, kill=False):
    """Stopped (SIGTERM: the broker writes its state) or killed, then started again."""
    site.kill() if kill else site.stop()
    return site.start()


def acked(c, n, timeout=10):
    out = []
    for _ in range(n):
        p = c.expect(3, timeout)
        out.append(p)
        if p.qos == 1:
            c.ack(PUBACK, p.packet_id)
    return out


def test_what_a_persistent_session_holds_survives_a_graceful_restart(site, tag):
    """Its subscriptions, a message in flight (sent again, DUP, with its
    packet id: MQTT-4.4.0-1), the messages queued while it was away (in
    order), and the retained messages."""
    c, _ = connected(site, f"s-{tag}")
    c.subscribe((f"q/{tag}", 1))
    p, _ = connected(site, f"p-{tag}", clean=True)
    p.publish_acked(f"q/{tag}", b"in flight", qos=1)
    first = c.expect(3)                                # never acknowledged
    c.drop()
    for n in range(20):
        p.publish_acked(f"q/{tag}", str(n).encode(), qos=1)
    p.publish_acked(f"r/{tag}", b"kept", qos=1, retain=True)
    p.disconnect()
    restarted(site)
    c, present = connected(site, f"s-{tag}")
    assert present is True
    again = c.expect(3)
    assert (again.payload, again.dup, again.packet_id) == (b"in flight", True, first.packet_id)
    c.ack(PUBACK, again.packet_id)
    assert [int(m.payload) for m in acked(c, 20)] == list(range(20))
    p, _ = connected(site, f"p-{tag}", clean=True)
    p.publish_acked(f"q/{tag}", b"after the restart", qos=1)
    assert acked(c, 1)[0].payload == b"after the restart"
    c.subscribe((f"r/{tag}", 1))
    m = acked(c, 1)[0]
    assert (m.payload, m.retain) == (b"kept", True)


def test_a_retained_qos0_message_goes_at_qos0_after_a_restart(site, tag):
    # [MQTT-3.8.4-6] the retained message keeps its QoS in the broker's state: the
    # subscription's QoS 2 is the most it gets, not what it gets
    p, _ = connected(site, f"p-{tag}", clean=True)
    p.publish(f"r/{tag}", b"at most once", qos=0, retain=True)
    p.publish_acked(f"fence/{tag}", b"", qos=1)         # the QoS 0 one is taken in before it
    p.disconnect()
    restarted(site)
    c, _ = connected(site, f"s-{tag}", clean=True)
    c.subscribe((f"r/{tag}", 2))
    m = c.expect(3)
    assert (m.payload, m.qos, m.retain) == (b"at most once", 0, True)


def test_a_clean_session_does_not_survive_a_restart(site, tag):
    c, _ = connected(site, f"c-{tag}", clean=True)
    c.subscribe((f"t/{tag}", 1))
    restarted(site)
    assert connected(site, f"c-{tag}")[1] is False


def test_a_shared_subscription_and_what_waits_in_its_group_survive_a_restart(site, tag, broker_name, request):
    if broker_name == "mosquitto":
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=(
            "mosquitto 2.0 does not restore $share subscriptions from its persistence file: "
            "a member must subscribe again, and what came meanwhile reached no one")))
    share = f"$share/g/w/{tag}"
    m, _ = connected(site, f"m-{tag}")
    m.subscribe((share, 1))
    m.disconnect()
    p, _ = connected(site, f"p-{tag}", clean=True)
    p.publish_acked(f"w/{tag}", b"before", qos=1)
    p.disconnect()
    restarted(site)
    p, _ = connected(site, f"p-{tag}", clean=True)
    p.publish_acked(f"w/{tag}", b"after", qos=1)        # the group has its member back before it has
    m, present = connected(site, f"m-{tag}")
    assert present is True
    assert [x.payload for x in acked(m, 2, timeout=3)] == [b"before", b"after"]


def test_a_killed_broker_keeps_what_it_had_written(site, tag):
    """A SIGKILL loses only what changed since the broker last wrote its state
    (every second here, as ``autosave_interval 1`` for mosquitto)."""
    c, _ = connected(site, f"s-{tag}")
    c.subscribe((f"k/{tag}", 1))
    c.disconnect()
    p, _ = connected(site, f"p-{tag}", clean=True)
    p.publish_acked(f"k/{tag}", b"written-" + tag.encode(), qos=1)
    wait_until(lambda: written(site, b"written-" + tag.encode()), what="the broker writing its state")
    restarted(site, kill=True)
    c, present = connected(site, f"s-{tag}")
    assert present is True
    assert acked(c, 1)[0].payload == b"written-" + tag.encode()


def written(site, payload: bytes) -> bool:
    """Whether the broker's state file holds ``payload`` (mosquitto's as it is,
    the embedded broker's in base64)."""
    try:
        data = site.state_file.read_bytes()
    except FileNotFoundError:
        return False
    return payload in data or base64.b64encode(payload) in data


def test_the_embedded_broker_refuses_a_state_file_it_cannot_read_and_says_what_to_do(tmp_path):
    from fogmesh.broker.embedded import state_path
    from fogmesh.broker.ports import free_port
    port = free_port()
    state_path(tmp_path, port).write_bytes(b"{not a state")
    done = subprocess.run([sys.executable, "-m", "fogmesh", "broker", "--port", str(port), "--persistence",
                           str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    said = done.stderr.strip().splitlines()[-1]
    assert str(state_path(tmp_path, port)) in said and "--no-persistence" in said and "Traceback" not in done.stderr


def test_a_second_embedded_broker_on_the_same_state_file_is_refused(tmp_path):
    from fogmesh.broker.embedded import EmbeddedBroker, state_path
    from fogmesh.broker.ports import free_port
    port = free_port()
    with EmbeddedBroker(port=port, persistence=tmp_path):
        done = subprocess.run([sys.executable, "-m", "fogmesh", "broker", "--port", str(port), "--persistence",
                               str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    said = done.stderr.strip().splitlines()[-1]
    assert "another broker uses" in said and str(state_path(tmp_path, port)) in said


def test_the_state_file_is_readable_by_the_brokers_own_user_only(site, tag):
    """It holds every kept session and message (tasks, answers, commands):
    mode 0600, whatever the umask."""
    c, _ = connected(site, f"s-{tag}")
    c.subscribe((f"m/{tag}", 1))
    c.disconnect()
    site.stop()                                        # a graceful stop writes it
    assert stat.S_IMODE(site.state_file.stat().st_mode) == 0o600


def test_the_embedded_brokers_state_file_written_over_an_older_one_is_its_users_only(tmp_path):
    # One written before the broker kept it 0600, and a half-written one a crash left behind
    from fogmesh.broker.embedded.persistence import StateFile
    path = tmp_path / "embedded-broker-1883.state"
    for old in (path, path.with_name(path.name + ".new")):
        old.write_bytes(b"old")
        old.chmod(0o644)
    StateFile(path).save(b"new", 1)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
