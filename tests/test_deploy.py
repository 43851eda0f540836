"""Fleet deployment end to end: ``fogmesh bundle`` and ``fogmesh deploy`` as
the operator runs them, agents as ``fogmesh agent`` processes, real brokers
(mosquitto and the embedded one), bundles built in the test from a small
package with one dependency wheel."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.devices.client import FogClient
from tests.deployment import Fleet, Reports, fleet_of, make_bundle, make_key, reports_of, running
from tests.netcut import CuttableLink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def fleet(broker, root: str, tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Fleet]:
    yield from fleet_of(broker, root, tmp_path, keys)


@pytest.fixture
def reports(broker, root: str) -> Iterator[Reports]:
    yield from reports_of(broker, root)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("bundles")
    key = keys[0]
    return {"1.0": make_bundle(where, "1.0", key=key), "1.1": make_bundle(where, "1.1", key=key),
            "2.0-broken": make_bundle(where, "2.0", key=key, broken=True)}


def plant(client: FogClient, agent: str, timeout: float = 20.0):
    """What ``agent`` answers to a plant task sent to it directly."""
    return client.send("plant", {"moisture": 2}, agent=agent).result(timeout=timeout)


def all_run(agents: list[str], version: str):
    return lambda r: all(running(version)(r.get(a, {"state": ""})) for a in agents)


def test_a_deploy_to_a_site_makes_each_of_its_agents_answer_the_new_kind_and_no_other(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    for agent_id, site in (("f1", "farm"), ("f2", "farm"), ("c1", "city")):
        fleet.start(agent_id, "--site", site)
    reports.wait(lambda r: {"f1", "f2", "c1"} <= set(r))
    done = fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "targeted 2, applied 2, succeeded 2, failed 0" in done.stdout
    with FogClient(fleet.url, root=fleet.root) as client:
        for agent in ("f1", "f2"):
            assert plant(client, agent).value == {"version": "1.0", "water_ml": 20}
        other = plant(client, "c1")
        assert other.error is not None and other.error.code == "unknown_kind"


def test_an_agent_down_during_the_push_and_a_new_one_both_catch_up_when_they_start(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    fleet.stop("f1")
    done = fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", "--no-wait", key=keys[0])
    assert done.returncode == 0, done.stderr
    fleet.start("f1", "--site", "farm")         # was down during the push
    fleet.start("f9", "--site", "farm")         # never seen before
    reports.wait(all_run(["f1", "f9"], "1.0"))
    with FogClient(fleet.url, root=fleet.root) as client:
        assert plant(client, "f1").value["version"] == plant(client, "f9").value["version"] == "1.0"


def test_a_failed_canary_rolls_back_and_the_other_agents_never_install_it(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    for a in ("a0", "a1", "a2"):
        fleet.start(a, "--site", "farm")
    reports.wait(lambda r: {"a0", "a1", "a2"} <= set(r))
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    done = fleet.deploy(str(bundles["2.0-broken"]), "--to", "site:farm", "--canaries", "1", "--soak", "1",
                        key=keys[0])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rolled back" in done.stdout and "health_check_failed" in done.stdout
    a0 = reports.wait(lambda r: r["a0"]["state"] == "running" and r["a0"]["desired_serial"] ==
                      r["a0"]["applied_serial"])["a0"]
    assert a0["bundles"]["plantcare"]["version"] == "1.0"
    assert all(r.get("version") != "2.0" for r in reports.seen if r["agent"] in ("a1", "a2"))
    with FogClient(fleet.url, root=fleet.root) as client:
        assert [plant(client, a).value["version"] for a in ("a0", "a1", "a2")] == ["1.0"] * 3


def test_passing_canaries_let_the_rest_of_the_site_have_it(fleet: Fleet, reports: Reports, keys, bundles) -> None:
    for a in ("a0", "a1"):
        fleet.start(a, "--site", "farm")
    reports.wait(lambda r: {"a0", "a1"} <= set(r))
    done = fleet.deploy(str(bundles["1.1"]), "--to", "site:farm", "--canaries", "1", "--soak", "1", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "proceed" in done.stdout
    reports.wait(all_run(["a0", "a1"], "1.1"))


def test_a_failure_without_canaries_rolls_the_target_back_to_what_ran(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    done = fleet.deploy(str(bundles["2.0-broken"]), "--to", "site:farm", key=keys[0])
    assert done.returncode == 1 and "rolling site:farm back" in done.stdout, done.stdout
    status = fleet.deploy("status")
    assert "(rollback): plantcare 1.0" in status.stdout, status.stdout


def test_rollback_returns_the_target_to_the_version_before(fleet: Fleet, reports: Reports, keys, bundles) -> None:
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    for v in ("1.0", "1.1"):
        assert fleet.deploy(str(bundles[v]), "--to", "site:farm", key=keys[0]).returncode == 0
    done = fleet.deploy("rollback", "--to", "site:farm", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    with FogClient(fleet.url, root=fleet.root) as client:
        assert plant(client, "f1").value["version"] == "1.0"
    history = fleet.deploy("history").stdout
    assert [line.split()[4] for line in history.splitlines()] == ["deploy:", "deploy:", "rollback:"]


def test_remove_makes_the_kind_unknown(fleet: Fleet, reports: Reports, keys, bundles) -> None:
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    done = fleet.deploy("remove", "plant", "--to", "site:farm", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    with FogClient(fleet.url, root=fleet.root) as client:
        answer = plant(client, "f1")
    assert answer.error is not None and answer.error.code == "unknown_kind"
    assert fleet.agents["f1"].envs() == []


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_link_cut_mid_transfer_resumes_without_starting_over(
        broker, root: str, tmp_path: Path, keys, reports: Reports) -> None:
    big = make_bundle(tmp_path, "1.0", key=keys[0], padding=4_000_000)
    size = big.stat().st_size
    link = CuttableLink(broker.host, broker.port, rate=1_000_000)     # ~4 s: time to cut it halfway
    fleet = Fleet(broker.url, root, tmp_path, keys[1])
    try:
        fleet.start("f1", "--site", "farm", url=link.url)
        reports.wait(lambda r: "f1" in r)
        before = sum(link.delivered)
        assert fleet.deploy(str(big), "--to", "site:farm", "--no-wait", key=keys[0]).returncode == 0
        reports.wait(lambda r: 0.3 <= (r["f1"].get("progress") or 0) < 1.0, timeout=60)
        link.cut()
        reports.wait(lambda r: running("1.0")(r["f1"]), timeout=90)
        carried = sum(link.delivered) - before
        cuts = link.cuts
    finally:
        fleet.stop_all()
        link.close()
    print(f"{carried} bytes carried for a {size}-byte bundle ({carried / size:.3f}x)")
    assert cuts == 1
    assert carried <= 1.1 * size, f"{carried} bytes reached the agent for a {size}-byte bundle"


@pytest.fixture(scope="module")
def refusal_bundles(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("refused")
    other_key, _ = make_key(where, "stranger.key")
    return {
        "unsigned": make_bundle(where / "u", "1.5", key=None),
        "unknown_key": make_bundle(where / "k", "1.5", key=other_key),
        "downgrade": make_bundle(where / "d", "0.9", key=keys[0]),
        "incompatible": make_bundle(where / "i", "1.5", key=keys[0], tag="cp27-cp27m-win32"),
        "too_large": make_bundle(where / "t", "1.5", key=keys[0], padding=300_000),
    }


@pytest.mark.parametrize("reason", ["unsigned", "unknown_key", "downgrade", "incompatible", "too_large"])
def test_a_refused_bundle_leaves_the_running_version_serving_says_why_and_stages_nothing(
        fleet: Fleet, reports: Reports, keys, bundles, refusal_bundles, reason: str) -> None:
    agent = fleet.start("f1", "--site", "farm", "--max-bundle-mb", "0.2")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    done = fleet.deploy(str(refusal_bundles[reason]), "--to", "site:farm", key=keys[0])
    if reason in ("unsigned", "unknown_key"):
        # fogmesh deploy refuses it before publishing (test_deploy_hostile); published
        # anyway, as by an older fogmesh deploy or a script of the Operator API:
        assert done.returncode == 2 and reason in done.stderr, done.stdout + done.stderr
        from fogmesh.deploy.bundle_file import Bundle
        from fogmesh.deploy.desired import Desired
        from fogmesh.deploy.operator import Operator
        from fogmesh.deploy.signing import SigningKey
        with Operator(fleet.url, root=fleet.root, key=SigningKey.load(keys[0])) as op:
            ref = op.put_bundle(Bundle.read(refusal_bundles[reason]))
            op.put_desired(Desired("site:farm", op.serial(), (ref,)))
    else:
        assert done.returncode == 1, done.stdout
    refused = reports.wait_seen(lambda r: r["agent"] == "f1" and r["reason"] == reason)
    assert refused["state"] == "refused" and refused["bundles"]["plantcare"]["version"] == "1.0"
    if reason not in ("unsigned", "unknown_key"):       # the command's rollback: 1.0 is desired again
        reports.wait(lambda r: running("1.0")(r["f1"]) and r["f1"]["desired_serial"] == r["f1"]["applied_serial"])
    with FogClient(fleet.url, root=fleet.root) as client:
        assert plant(client, "f1").value["version"] == "1.0"
    assert agent.staged() == [] and [e.split("-")[1] for e in agent.envs()] == ["1.0"]


def test_a_replayed_older_desired_state_is_refused(fleet: Fleet, reports: Reports, keys, bundles) -> None:
    from fogmesh.mqtt import MqttClient
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    got: list[bytes] = []
    watcher = MqttClient(fleet.url, on_message=lambda m: got.append(m.payload) if m.payload else None)
    watcher.start()
    topic = f"{fleet.root}/deploy/desired/site/farm"
    watcher.subscribe(topic)
    try:
        assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
        old = got[-1]
        assert fleet.deploy(str(bundles["1.1"]), "--to", "site:farm", key=keys[0]).returncode == 0
        watcher.publish(topic, old, retain=True).wait(5)      # a replay of the signed 1.0 state
        refused = reports.wait_seen(lambda r: r["reason"] == "stale_serial")
    finally:
        watcher.stop()
    assert refused["bundles"]["plantcare"]["version"] == "1.1"


def test_tampered_chunks_on_the_broker_are_a_digest_mismatch(fleet: Fleet, reports: Reports, keys, bundles) -> None:
    from fogmesh.deploy.bundle_file import Bundle
    from fogmesh.deploy.desired import Desired
    from fogmesh.deploy.operator import Operator
    from fogmesh.deploy.signing import SigningKey
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    with Operator(fleet.url, root=fleet.root, key=SigningKey.load(keys[0])) as op:
        ref = op.put_bundle(Bundle.read(bundles["1.1"]))
        op.client.publish(f"{fleet.root}/deploy/chunks/{ref.digest}/0", b"not the chunk", retain=True).wait(5)
        op.put_desired(Desired("site:farm", op.serial(), (ref,)))
    refused = reports.wait_seen(lambda r: r["reason"] == "digest_mismatch")
    assert refused["bundles"]["plantcare"]["version"] == "1.0"
    assert fleet.agents["f1"].staged() == []


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"], indirect=True)
def test_tasks_of_the_kind_at_10_per_second_during_an_update_are_each_answered_once(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    """A device that publishes each task once (most firmware) and a plain
    subscriber counting replies per id, while the kind goes from 1.0 to 1.1."""
    import json
    import threading
    import time
    from collections import Counter

    from fogmesh.mqtt import MqttClient
    for a in ("f1", "f2"):
        fleet.start(a, "--site", "farm")
    reports.wait(lambda r: {"f1", "f2"} <= set(r))
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    replies: Counter[str] = Counter()
    versions: dict[str, str] = {}
    errors: list[dict] = []
    lock = threading.Lock()

    def on_reply(m) -> None:
        r = json.loads(m.payload)
        with lock:
            replies[r["id"]] += 1
            if r.get("status") == "ok":
                versions[r["id"]] = r["result"]["version"]
            else:
                errors.append(r)

    device = MqttClient(fleet.url, on_message=on_reply)
    device.start()
    device.subscribe(f"{fleet.root}/replies/dev1")
    sent: list[str] = []
    try:
        deploying = threading.Thread(target=lambda: fleet.deploy(str(bundles["1.1"]), "--to", "site:farm",
                                                                 key=keys[0]))
        started = time.monotonic()
        for n in range(100):                      # 10 s at 10 tasks/s
            if n == 20:
                deploying.start()
            task_id = f"t{n:03d}"
            device.publish(f"{fleet.root}/tasks", json.dumps(
                {"id": task_id, "kind": "plant", "args": {"moisture": 1},
                 "reply_to": f"{fleet.root}/replies/dev1"}).encode(), qos=1)
            sent.append(task_id)
            time.sleep(max(0.0, started + (n + 1) / 10 - time.monotonic()))   # the device's pace, not a wait
        deploying.join(120)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(replies) < len(sent):
            time.sleep(0.1)                       # replies still on their way
        time.sleep(1.0)                           # room for a late duplicate: an absence cannot be awaited
    finally:
        device.stop()
    lost = [t for t in sent if replies[t] == 0]
    doubled = [t for t in sent if replies[t] > 1]
    assert (lost, doubled, errors) == ([], [], [])
    seen = [versions[t] for t in sent]
    assert seen[0] == "1.0" and seen[-1] == "1.1" and set(seen) == {"1.0", "1.1"}


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_cloud_worker_takes_a_deployment_on_the_cloud_broker(fleet: Fleet, reports: Reports, keys, bundles) -> None:
    import os
    import subprocess
    import sys
    log = fleet.tmp / "cw.log"
    worker = subprocess.Popen([sys.executable, "-m", "fogmesh", "cloud-worker", "--cloud", fleet.url, "--cloud-root",
                               fleet.root, "--id", "cw-1", "--concurrency", "1", "--trust-key", str(fleet.pub),
                               "--site", "cloud"], stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                              env={**os.environ, "FOGMESH_STATE_DIR": str(fleet.tmp / "cw-state")})
    try:
        reports.wait(lambda r: "cw-1" in r)
        done = fleet.deploy(str(bundles["1.0"]), "--to", "site:cloud", key=keys[0])
        assert done.returncode == 0, done.stdout + done.stderr
        with FogClient(fleet.url, root=fleet.root) as client:
            assert plant(client, "cw-1").value["version"] == "1.0"
    finally:
        worker.terminate()
        worker.wait(20)


def test_bench_deploy_prints_its_row_for_a_small_bundle() -> None:
    import json
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "fogmesh", "bench", "deploy", "--agents", "1", "--size-mb", "0.2",
                           "--json"], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["rows"][0]
    assert row["all_running"] and row["agents"] == 1 and 1.0 <= row["wire_ratio_max"] <= 1.1


def test_a_desired_state_changed_after_signing_is_refused_as_a_bad_signature(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    from fogmesh.deploy.bundle_file import Bundle
    from fogmesh.deploy.desired import Desired
    from fogmesh.deploy.manifest import Signed
    from fogmesh.deploy.operator import Operator
    from fogmesh.deploy.signing import SigningKey
    agent = fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    key = SigningKey.load(keys[0])
    with Operator(fleet.url, root=fleet.root, key=key) as op:
        ref = op.put_bundle(Bundle.read(bundles["1.1"]))
        honest = Signed(Desired("site:farm", op.serial(), ()).to_dict()).signed_with(key.sign)
        forged = Signed(Desired("site:farm", op.serial(), (ref,)).to_dict(), honest.signatures)
        op.client.publish(f"{fleet.root}/deploy/desired/site/farm", forged.encode(), retain=True).wait(5)
    refused = reports.wait_seen(lambda r: r["reason"] == "bad_signature")
    assert refused["state"] == "refused" and refused["bundles"]["plantcare"]["version"] == "1.0"
    with FogClient(fleet.url, root=fleet.root) as client:
        assert plant(client, "f1").value["version"] == "1.0"
    assert agent.staged() == []


@pytest.mark.parametrize("broker", ["amqtt"], indirect=True)
def test_an_environment_removed_by_hand_is_installed_again_at_the_next_start(
        fleet: Fleet, reports: Reports, keys, bundles) -> None:
    import shutil
    agent = fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    fleet.stop("f1")
    for env in agent.state_dir.glob("deploy-*/envs/*"):
        shutil.rmtree(env)
    since = len(reports.seen)
    fleet.start("f1", "--site", "farm")
    reports.wait_seen(lambda r: running("1.0")(r) and r["state"] == "running", since=since)
    with FogClient(fleet.url, root=fleet.root) as client:
        assert plant(client, "f1", timeout=30).value["version"] == "1.0"


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_version_that_fails_only_in_the_agents_workers_is_switched_back_within_10_s(
        fleet: Fleet, reports: Reports, keys, bundles, tmp_path: Path) -> None:
    bad = make_bundle(tmp_path, "1.2", key=keys[0], broken="in_workers")
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    assert fleet.deploy(str(bundles["1.0"]), "--to", "site:farm", key=keys[0]).returncode == 0
    since = len(reports.seen)
    done = fleet.deploy(str(bad), "--to", "site:farm", "--no-wait", key=keys[0])
    assert done.returncode == 0, done.stderr
    switching = reports.wait_seen(lambda r: r["state"] == "health-check", since=since)
    back = reports.wait_seen(lambda r: r["state"] == "rolled_back", since=since)
    assert "switched back to 1.0" in back["detail"] and "no GPIO here" in back["detail"]
    assert back["at"] - switching["at"] <= 10.0 + 1.0
    assert back["bundles"]["plantcare"]["version"] == "1.0"
    with FogClient(fleet.url, root=fleet.root) as client:
        assert plant(client, "f1").value["version"] == "1.0"
    assert [e.split("-")[1] for e in fleet.agents["f1"].envs()] == ["1.0"]


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_prune_clears_the_bundles_no_desired_state_names_and_no_rollback_needs(
        fleet: Fleet, reports: Reports, keys, bundles, tmp_path: Path) -> None:
    from fogmesh.deploy.bundle_file import Bundle
    from fogmesh.deploy.operator import Operator
    v12 = make_bundle(tmp_path, "1.2", key=keys[0])
    fleet.start("f1", "--site", "farm")
    reports.wait(lambda r: "f1" in r)
    for b in (bundles["1.0"], bundles["1.1"], v12):
        assert fleet.deploy(str(b), "--to", "site:farm", key=keys[0]).returncode == 0
    done = fleet.deploy("prune")
    assert done.returncode == 0 and "cleared plantcare 1.0" in done.stdout, done.stdout + done.stderr
    with Operator(fleet.url, root=fleet.root) as op:
        on_broker = {v: op.retained(op.topics.deploy_bundle(Bundle.read(b).manifest.digest)) is not None
                     for v, b in (("1.0", bundles["1.0"]), ("1.1", bundles["1.1"]), ("1.2", v12))}
        first_chunk = op.retained(op.topics.deploy_chunk(Bundle.read(bundles["1.0"]).manifest.digest, 0))
    assert on_broker == {"1.0": False, "1.1": True, "1.2": True} and first_chunk is None
    assert "nothing to clear" in fleet.deploy("prune").stdout
