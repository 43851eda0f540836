"""A newer desired state while an agent is still downloading, end to end: a
``fogmesh agent`` process behind a slow link, ``fogmesh deploy`` as the
operator runs it, a real broker. The flow's every other stage is pinned in
tests/test_deploy_flow.py with a fake clock; this is the receiver carrying
out the cancel for real (chunks no longer asked for, the staged download
dropped, the newer bundle fetched, installed and switched)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.devices.client import FogClient
from tests.deployment import Fleet, Reports, make_bundle, make_key, reports_of, running
from tests.netcut import CuttableLink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def reports(broker, root: str) -> Iterator[Reports]:
    yield from reports_of(broker, root)


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_newer_push_during_a_download_supersedes_it_and_the_older_version_never_runs(
        broker, root: str, tmp_path: Path, reports: Reports) -> None:
    key, pub = make_key(tmp_path)
    big = make_bundle(tmp_path, "1.0", key=key, padding=4_000_000)
    small = make_bundle(tmp_path, "1.1", key=key)
    link = CuttableLink(broker.host, broker.port, rate=250_000)       # ~16 s for the big one
    fleet = Fleet(broker.url, root, tmp_path, pub)
    try:
        agent = fleet.start("f1", "--site", "farm", url=link.url)
        reports.wait(lambda r: "f1" in r)
        before = sum(link.delivered)
        assert fleet.deploy(str(big), "--to", "site:farm", "--no-wait", key=key).returncode == 0
        reports.wait(lambda r: r["f1"].get("version") == "1.0" and 0.1 <= (r["f1"].get("progress") or 0) < 1.0,
                     timeout=60)
        done = fleet.deploy(str(small), "--to", "site:farm", key=key, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        reports.wait(lambda r: running("1.1")(r["f1"]) and r["f1"]["applied_serial"] == r["f1"]["desired_serial"])
        carried = sum(link.delivered) - before
        with FogClient(fleet.url, root=fleet.root) as client:
            assert client.send("plant", {"moisture": 2}, agent="f1").result(timeout=30).value["version"] == "1.1"
    finally:
        fleet.stop_all()
        link.close()
    of_1_0 = {r["state"] for r in reports.seen if r["agent"] == "f1" and r.get("version") == "1.0"}
    assert of_1_0 == {"downloading"}                   # never installed, never failed: superseded
    print(f"{carried} bytes carried for a {big.stat().st_size}-byte bundle and a small one")
    assert carried < 0.8 * big.stat().st_size          # the download stopped, not finished first
    assert [e.split("-")[1] for e in agent.envs()] == ["1.1"] and agent.staged() == []
