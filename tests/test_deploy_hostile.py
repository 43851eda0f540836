"""Hostile input against fleet deployment (issue #37's deployment rows), end
to end: agents as ``fogmesh agent`` processes, ``fogmesh deploy`` as the
operator runs it, a real broker, and the attacker as a plain MQTT client
with the rights to publish (``mosquitto_pub -r``) but not the signing key.

- An old signed desired state re-published retained must not be installed
  by an agent that joins afterwards with an empty state directory: the
  signed timestamp (``deploy/timestamp``) gives it the serial it must see.
- ``fogmesh deploy`` checks the bundle's signature and its key, and that the
  target names an agent, before it publishes anything."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.deploy.bundle_file import Bundle
from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient
from tests.deployment import Fleet, Reports, fleet_of, make_bundle, make_key, reports_of, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("stranger"), "stranger.key")


@pytest.fixture
def fleet(broker, root: str, tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Fleet]:
    yield from fleet_of(broker, root, tmp_path, keys)


@pytest.fixture
def reports(broker, root: str) -> Iterator[Reports]:
    yield from reports_of(broker, root)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys, stranger) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("bundles")
    out = {"1.0": make_bundle(where, "1.0", key=keys[0]), "1.1": make_bundle(where, "1.1", key=keys[0]),
           "stranger": make_bundle(where / "s", "1.2", key=stranger[0])}
    forged = where / "forged.fogbundle"           # its manifest changed after signing
    head, _, payload = out["1.1"].read_bytes().partition(b"\n")
    d = json.loads(head)
    d["signed"]["created"] += 1.0
    forged.write_bytes(json.dumps(d).encode() + b"\n" + payload)
    out["forged"] = forged
    return out


class Retained:
    """A plain MQTT client: what is retained on a topic, and publishing as an
    attacker with broker rights would (``mosquitto_pub -r``)."""

    def __init__(self, url: str, topic: str) -> None:
        self.got: list[bytes] = []
        self.arrived = threading.Condition()
        self.client = MqttClient(url, on_message=self._take)
        self.client.start()
        self.client.subscribe(topic)
        self.topic = topic

    def _take(self, m) -> None:
        if m.payload:
            with self.arrived:
                self.got.append(m.payload)
                self.arrived.notify_all()

    def last(self, timeout: float = 10.0) -> bytes:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.got, timeout), f"nothing retained on {self.topic}"
            return self.got[-1]

    def replay(self, payload: bytes) -> None:
        assert self.client.publish(self.topic, payload, retain=True).wait(5)

    def close(self) -> None:
        self.client.stop()


def plant_version(fleet: Fleet, agent: str) -> object:
    with FogClient(fleet.url, root=fleet.root) as client:
        answer = client.send("plant", {"moisture": 2}, agent=agent).result(timeout=20)
    return answer.value["version"] if answer.error is None else answer.error.code


# -- row 1: a replayed signed desired state and an agent that joins later -------------
def test_a_replayed_old_desired_state_is_not_installed_by_an_agent_that_joins_after_the_replay(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    desired = Retained(fleet.url, f"{fleet.root}/deploy/desired/site/farm")
    try:
        assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
        old = desired.last()
        assert fleet.deploy(str(bundles["1.1"]), "--to", "site:farm", key=keys[0]).returncode == 0
        desired.replay(old)                     # mosquitto_pub -r of the signed 1.0 state
        reports.wait_seen(lambda r: r["agent"] == "f1" and r["reason"] == "stale_serial")
    finally:
        desired.close()
    since = len(reports.seen)
    newcomer = fleet.start("n1", "--site", "farm")          # an empty state directory
    first = reports.wait_seen(lambda r: r["agent"] == "n1" and (r["reason"] == "stale_serial" or
                                                                "plantcare" in r["bundles"]), since=since)
    assert first["reason"] == "stale_serial" and first["state"] == "refused", first
    assert "timestamp" in first["detail"], first["detail"]
    assert "plantcare" not in first["bundles"] and newcomer.envs() == []
    assert plant_version(fleet, "n1") == "unknown_kind"
    assert plant_version(fleet, "f1") == "1.1"
    # The operator publishes the current state again: the newcomer takes it, the old one runs nowhere.
    again = fleet.deploy(str(bundles["1.1"]), "--to", "site:farm", key=keys[0])
    assert again.returncode == 0 and "a replayed document" in again.stdout, again.stdout + again.stderr
    reports.wait(lambda r: running("1.1")(r["n1"]) and running("1.1")(r["f1"]))
    assert all(r.get("bundles", {}).get("plantcare", {}).get("version") != "1.0"
               for r in reports.seen[since:] if r["agent"] == "n1")


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
@pytest.mark.parametrize("renewer", ["operator_key", "timestamp_key"])
def test_an_agent_joining_after_the_timestamp_expired_waits_and_installs_once_it_is_renewed(
        fleet: Fleet, reports: Reports, keys, bundles, renewer: str, tmp_path: Path) -> None:
    """The renewal by the operator's key, or by a key the agents take for timestamps only
    (a renewer on a box that is always on, while the operator's laptop is off)."""
    if renewer == "operator_key":
        agent_args, renew_args = ["--site", "farm"], ["renew"]
        renew_key = keys[0]
    else:
        renew_key, ts_pub = make_key(tmp_path, "ts.key")
        agent_args = ["--site", "farm", "--timestamp-key", str(ts_pub)]
        renew_args = ["renew", "--trust-key", str(keys[1])]
    fleet.start("f1", *agent_args)
    reports.wait(lambda r: "f1" in r)
    done = fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", "--timestamp-ttl", "2", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    stamp = Retained(fleet.url, f"{fleet.root}/deploy/timestamp")
    try:
        reports.wait(lambda r: running("1.0")(r["f1"]))
        expires = json.loads(stamp.last())["signed"]["expires"]
    finally:
        stamp.close()
    time.sleep(max(0.0, expires - time.time()) + 0.2)     # an expiry is a time on the clock, not an event
    since = len(reports.seen)
    fleet.start("n1", *agent_args)
    waiting = reports.wait_seen(lambda r: r["agent"] == "n1" and r["state"] == "refused", since=since)
    assert waiting["reason"] == "expired_timestamp" and "fogmesh deploy renew" in waiting["detail"], waiting
    renewed = fleet.deploy(*renew_args, key=renew_key)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    reports.wait(lambda r: running("1.0")(r["n1"]))
    assert plant_version(fleet, "f1") == "1.0"


# -- row 2: fogmesh deploy checks before it publishes anything ---------------------------
def _nothing_published(fleet: Fleet, before: bytes | None, bundle: Path) -> None:
    from fogmesh.deploy.operator import Operator
    with Operator(fleet.url, root=fleet.root) as op:
        assert op.retained(op.topics.deploy_desired("site:farm")) == before
        assert op.retained(op.topics.deploy_bundle(Bundle.read(bundle).manifest.digest)) is None


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
@pytest.mark.parametrize("case", ["bundle_of_a_stranger", "forged_manifest", "key_of_a_stranger",
                                  "key_the_agents_do_not_trust"])
def test_deploy_refuses_a_bundle_or_key_the_agents_would_refuse_and_publishes_nothing(
        fleet: Fleet, reports: Reports, keys, stranger, bundles, case: str) -> None:
    from fogmesh.deploy.operator import Operator
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    with Operator(fleet.url, root=fleet.root) as op:
        before = op.retained(op.topics.deploy_desired("site:farm"))
    bundle, key, extra, reason = {
        "bundle_of_a_stranger": (bundles["stranger"], keys[0], [], "unknown_key"),
        "forged_manifest": (bundles["forged"], keys[0], [], "bad_signature"),
        "key_of_a_stranger": (bundles["1.1"], stranger[0], [], "unknown_key"),
        # told to trust both keys, but the agent's report says it trusts only ops.key
        "key_the_agents_do_not_trust": (bundles["1.1"], stranger[0],
                                        ["--trust-key", str(keys[1]), "--trust-key", str(stranger[1])],
                                        "unknown_key"),
    }[case]
    since = len(reports.seen)
    done = fleet.deploy(str(bundle), "--to", "site:farm", *extra, key=key)
    assert done.returncode != 0, done.stdout
    assert reason in done.stderr and "nothing was published" in done.stderr, done.stderr
    if case == "key_the_agents_do_not_trust":
        assert "f1 (trusts" in done.stderr, done.stderr
    _nothing_published(fleet, before, bundle)
    assert plant_version(fleet, "f1") == "1.0"
    assert [r for r in reports.seen[since:] if r["agent"] == "f1" and r["state"] != "running"] == []


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_deploy_to_a_target_no_agent_answers_to_exits_non_zero_unless_told_to_wait_for_agents(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    done = fleet.deploy(str(bundles["1.0"]), "--to", "site:nosuchsite", key=keys[0])
    assert done.returncode != 0, done.stdout
    assert "no_agent" in done.stderr and "--wait-for-agents" in done.stderr, done.stderr
    from fogmesh.deploy.operator import Operator
    with Operator(fleet.url, root=fleet.root) as op:
        assert op.retained(op.topics.deploy_desired("site:nosuchsite")) is None
    waiting = fleet.deploy(str(bundles["1.0"]), "--to", "site:nosuchsite", "--wait-for-agents", "--no-wait",
                           key=keys[0])
    assert waiting.returncode == 0, waiting.stdout + waiting.stderr
    fleet.start("late", "--site", "nosuchsite")
    reports.wait(lambda r: running("1.0")(r.get("late", {"state": ""})))


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_forged_unsigned_documents_do_not_raise_the_serial_deploy_signs(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    """#37 re-audit: `fogmesh deploy` signed one past the newest serial it had
    seen, unsigned history and forged desired states included: a retained
    forgery pushed its serials past 2**53, after which every tool refused the
    agents' reports for good. Only signed, trusted documents count."""
    import time as _time
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    huge = 8_000_000_000_000_000
    history = Retained(fleet.url, f"{fleet.root}/deploy/history/{huge}")
    forged = Retained(fleet.url, f"{fleet.root}/deploy/desired/site/elsewhere")
    try:
        history.replay(json.dumps({"serial": huge, "target": "site:farm", "bundles": []}).encode())
        forged.replay(json.dumps({"signed": {"format": "fogmesh-desired/1", "target": "site:farm", "serial": huge,
                                             "bundles": []}, "signatures": []}).encode())
        done = fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0])
        assert done.returncode == 0, done.stdout + done.stderr
        reports.wait(lambda r: running("1.0")(r["f1"]))
        serial = reports.latest["f1"]["desired_serial"]
        assert serial <= _time.time() * 1000 + 60_000, serial      # the clock's, not one past the forgery
    finally:
        history.close()
        forged.close()
