"""Image kinds through fleet deployment: ``fogmesh bundle build --image-kind``
pins an image by digest in a signed bundle, ``fogmesh deploy`` pushes it as
any bundle, and agents (``fogmesh agent`` processes on podman) pull it from a
registry (Debian's docker-registry on loopback), health-check it and run
its kind: per task, and as a service container. Skipped where podman,
mmdebstrap or docker-registry is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.devices.client import FogClient
from tests import standin_images
from tests.deployment import Fleet, Reports, cli, fleet_of, make_key, reports_of
from tests.loopback_registry import LoopbackRegistry
from tests.test_containers import SERVICE_CODE, SUM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300),
              pytest.mark.skipif(not all(shutil.which(t) for t in ("podman", "mmdebstrap", "docker-registry")),
                                 reason="podman, mmdebstrap and docker-registry are not installed")]


def podman(*args: str) -> str:
    """A podman command that must succeed: its stdout."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"podman {' '.join(args[:3])} failed ({done.returncode}): {done.stderr[-1500:]}"
    return done.stdout


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("registry")
    old = {k: os.environ.get(k) for k in ("CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF")}
    os.environ["CONTAINERS_CONF"] = str(standin_images.containers_conf(work))
    registry = LoopbackRegistry(work / "registry")
    os.environ["CONTAINERS_REGISTRIES_CONF"] = str(registry.registries_conf)
    try:
        base = standin_images.rootfs()
        refs = {}
        for name, command in (("dsum", SUM), ("dsvc", ["python3", "-c", SERVICE_CODE])):
            (work / name).mkdir()
            (work / name / "Containerfile").write_text(f"FROM {base}\nCMD {json.dumps(command)}\n")
            local = f"localhost/fogmesh-test-{name}:{work.name}"
            podman("build", "-q", "-t", local, str(work / name))
            refs[name] = registry.push(local, f"{name}:1", work)
            subprocess.run(["podman", "rmi", "-f", local], capture_output=True, timeout=60)
        refs["missing"] = refs["dsum"].rsplit("@sha256:", 1)[0] + "@sha256:" + "0" * 64
        yield refs
    finally:
        registry.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def fleet(broker, root: str, tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[Fleet]:
    yield from fleet_of(broker, root, tmp_path, keys)


@pytest.fixture
def reports(broker, root: str) -> Iterator[Reports]:
    yield from reports_of(broker, root)


def image_bundle(where: Path, key: Path, version: str, *kinds: str) -> Path:
    out = where / f"imgs-{version}.fogbundle"
    args = ["bundle", "build", "--name", "imgs", "--version", version, "--out", str(out), "--sign", str(key)]
    for kind in kinds:
        args += ["--image-kind", kind, "--health", kind.split("=")[0] + '={"values": [1]}']
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return out


def runs(version: str):
    return lambda r: r.get("bundles", {}).get("imgs", {}).get("version") == version and r["state"] == "running"


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_an_image_bundle_is_pulled_by_digest_and_runs_per_task_and_as_a_service(
        fleet: Fleet, reports: Reports, keys, images, tmp_path: Path) -> None:
    fleet.start("i1")
    reports.wait(lambda r: "i1" in r)
    bundle = image_bundle(tmp_path, keys[0], "1.0", f"dsum={images['dsum']}", f"dsvc={images['dsvc']},service")
    assert images["dsum"] in bundle.read_bytes().split(b"\n", 1)[0].decode()    # the signed manifest pins it
    done = fleet.deploy(str(bundle), "--to", "all", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    reports.wait(lambda r: runs("1.0")(r.get("i1", {"state": ""})))
    with FogClient(fleet.url, root=fleet.root) as client:
        per_task = client.send("dsum", {"values": [4, 5]}, agent="i1").result(timeout=60)
        service = client.send("dsvc", {"values": [4, 5]}, agent="i1").result(timeout=60)
    assert per_task.ok and per_task.value == {"sum": 9}, per_task
    assert service.ok and service.value["sum"] == 9, service
    service_containers = ("ps", "-q", "--filter", "name=fogmesh-svc-i1")
    assert podman(*service_containers).strip() != ""       # the filter finds it while it runs...
    fleet.stop("i1")
    assert podman(*service_containers).strip() == ""       # ...and the agent stopped it


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_tag_is_pinned_to_the_digest_the_registry_serves_and_agents_pull_it(
        fleet: Fleet, reports: Reports, keys, images, tmp_path: Path) -> None:
    """The operator builds an image here, pushes it by its tag and builds the
    bundle from the tag: the copy on this box can have a digest of its own
    (podman makes the registry's manifest at push time; here, it was built
    again since), and the bundle must name the registry's, or no agent can
    pull it."""
    registry = images["dsum"].split("/", 1)[0]
    tagged = f"{registry}/dtag:{tmp_path.name[-12:]}"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Containerfile").write_text(f"FROM {standin_images.ROOTFS}\nCMD {json.dumps(SUM)}\n"
                                                    f"LABEL test={tmp_path.name}\n")
    podman("build", "-q", "-t", tagged, str(tmp_path / "ctx"))
    try:
        podman("push", "-q", "--tls-verify=false", "--digestfile", str(tmp_path / "digest"), tagged)
        served = (tmp_path / "digest").read_text().strip()
        # Built again under the same tag, not pushed: podman may record the pushed digest on the
        # copy it pushed, so the copy here is made to differ for sure (what made the old pin wrong).
        (tmp_path / "ctx" / "Containerfile").write_text(f"FROM {standin_images.ROOTFS}\nCMD {json.dumps(SUM)}\n"
                                                        f"LABEL test={tmp_path.name} again=1\n")
        podman("build", "-q", "-t", tagged, str(tmp_path / "ctx"))
        local = podman("image", "inspect", "--format", "{{.Digest}}", tagged).strip()
        assert local != served
        bundle = image_bundle(tmp_path, keys[0], "1.0", f"dsum={tagged}")     # the local copy is there
    finally:
        subprocess.run(["podman", "rmi", "-f", tagged], capture_output=True, timeout=60)   # its registry goes too
        subprocess.run(["podman", "image", "prune", "-f", "--filter", f"label=test={tmp_path.name}"],
                       capture_output=True, timeout=60)                  # the first build, untagged since
    manifest = bundle.read_bytes().split(b"\n", 1)[0].decode()
    assert f"{registry}/dtag@{served}" in manifest and local not in manifest
    fleet.start("i4")
    reports.wait(lambda r: "i4" in r)
    done = fleet.deploy(str(bundle), "--to", "all", key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    reports.wait(lambda r: runs("1.0")(r.get("i4", {"state": ""})))
    with FogClient(fleet.url, root=fleet.root) as client:
        answer = client.send("dsum", {"values": [2, 3]}, agent="i4").result(timeout=60)
    assert answer.ok and answer.value == {"sum": 5}, answer


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_an_image_the_registry_does_not_have_fails_and_the_running_version_keeps_serving(
        fleet: Fleet, reports: Reports, keys, images, tmp_path: Path) -> None:
    fleet.start("i2")
    reports.wait(lambda r: "i2" in r)
    done = fleet.deploy(str(image_bundle(tmp_path, keys[0], "1.0", f"dsum={images['dsum']}")), "--to", "all",
                        key=keys[0])
    assert done.returncode == 0, done.stdout + done.stderr
    reports.wait(lambda r: runs("1.0")(r.get("i2", {"state": ""})))
    fleet.deploy(str(image_bundle(tmp_path, keys[0], "1.1", f"dsum={images['missing']}")), "--to", "all",
                 "--no-wait", key=keys[0])
    failed = reports.wait(lambda r: r.get("i2", {}).get("reason") == "image_pull_failed", timeout=120)["i2"]
    assert "cannot pull" in failed["detail"]
    with FogClient(fleet.url, root=fleet.root) as client:
        still = client.send("dsum", {"values": [1, 1]}, agent="i2").result(timeout=60)
    assert still.ok and still.value == {"sum": 2}


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_an_agent_without_a_container_engine_refuses_an_image_bundle_and_says_what_to_install(
        fleet: Fleet, reports: Reports, keys, images, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FOGMESH_CONTAINER_ENGINE", "no-such-engine")
    fleet.start("i3")
    reports.wait(lambda r: "i3" in r)
    fleet.deploy(str(image_bundle(tmp_path, keys[0], "1.0", f"dsum={images['dsum']}")), "--to", "all",
                 "--no-wait", key=keys[0])
    refused = reports.wait(lambda r: r.get("i3", {}).get("reason") == "incompatible", timeout=60)["i3"]
    assert refused["state"] == "refused" and "install podman or docker" in refused["detail"]
