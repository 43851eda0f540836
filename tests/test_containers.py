"""Container kinds, run once per task, on this box's podman (runc; images
built from Debian packages with mmdebstrap, since no registry is reachable).
Skipped where podman or mmdebstrap is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Iterator

import pytest

from fogmesh.broker.ports import free_port
from fogmesh.containers import Engine, image_kind
from fogmesh.devices.client import FogClient
from fogmesh.registry import Registry
from tests import standin_images
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300),
              pytest.mark.skipif(not (shutil.which("podman") and shutil.which("mmdebstrap")),
                                 reason="podman and mmdebstrap are not installed")]

IMAGE = standin_images.ROOTFS
SUM_IMAGE = "localhost/fogmesh-test-sum:bookworm"
SUM = ["python3", "-c", "import sys, json; a = json.load(sys.stdin); print(json.dumps({'sum': sum(a['values'])}))"]


def podman(*args: str) -> str:
    """A podman command that must succeed (a failing podman must not pass for "nothing there"): its stdout."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"podman {' '.join(args[:3])} failed ({done.returncode}): {done.stderr[-1500:]}"
    return done.stdout


def running_of(owner: str) -> str:
    """The ids of the per-task containers ``owner`` (an agent) runs."""
    return podman("ps", "-q", "--filter", f"label=fogmesh.task-of={owner}").strip()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    work = tmp_path_factory.mktemp("podman")
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(standin_images.containers_conf(work))
    try:
        standin_images.rootfs()
        if subprocess.run(["podman", "image", "exists", SUM_IMAGE], check=False).returncode != 0:
            # the same with a default command, as a real image of a kind has
            (work / "Containerfile").write_text(f"FROM {IMAGE}\nCMD {json.dumps(SUM)}\n")
            subprocess.run(["podman", "build", "-q", "-t", SUM_IMAGE, str(work)], check=True, capture_output=True,
                           timeout=120)
        found = Engine.detect()
        assert found is not None and found.name == "podman"
        yield found
    finally:
        if old is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = old


@pytest.fixture
def agent(engine: Engine, agents, broker, root):
    owner = f"c1-{root[-6:]}"          # its containers' label: other tests' containers run meanwhile
    kinds = [image_kind("csum", IMAGE, engine=engine, command=SUM, timeout_s=20, owner=owner),
             image_kind("crash", IMAGE, engine=engine, command=["python3", "-c", "import sys; sys.exit(3)"],
                        owner=owner),
             image_kind("garbage", IMAGE, engine=engine, command=["python3", "-c", "print('not json')"], owner=owner),
             image_kind("hang", IMAGE, engine=engine, command=["sleep", "60"], timeout_s=2, owner=owner)]
    return agents("c1", broker.url, root, registry=Registry.from_entry_points().with_kinds(*kinds))


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_container_kind_runs_each_task_in_a_fresh_container(agent, broker, root) -> None:
    with FogClient(broker.url, root=root) as client:
        r = client.submit("csum", {"values": [1, 2, 3]}, timeout=60)
    assert r.ok and r.value == {"sum": 6}


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
@pytest.mark.parametrize("kind, says", [("crash", "exited with 3"), ("garbage", "no JSON"),
                                        ("hang", "did not answer within 2 s")])
def test_a_container_that_crashes_prints_garbage_or_hangs_gets_a_clear_error_and_the_agent_goes_on(
        agent, broker, root, kind: str, says: str) -> None:
    with FogClient(broker.url, root=root) as client:
        bad = client.submit(kind, {}, timeout=60)
        good = client.submit("csum", {"values": [2]}, timeout=60)
    assert bad.error is not None and says in bad.error.message, bad.error
    assert good.ok and good.value == {"sum": 2}
    assert running_of(f"c1-{root[-6:]}") == ""


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_an_agent_started_with_image_kind_answers_it_from_the_images_own_command(engine, broker, root,
                                                                                  tmp_path) -> None:
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "c2", "--broker", broker.url,
                              "--root", root, "--image-kind", f"csum={SUM_IMAGE}", "--timeout", "csum=20",
                              "--log-level", "WARNING"], env={**os.environ, "FOGMESH_STATE_DIR": str(tmp_path)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with FogClient(broker.url, root=root) as client:
            deadline_tries = 0
            while True:
                try:
                    r = client.submit("csum", {"values": [4, 5]}, timeout=10)
                    break
                except TimeoutError:
                    deadline_tries += 1
                    assert deadline_tries < 6, "the agent never answered"
        assert r.ok and r.value == {"sum": 9} and r.worker == "c2"
    finally:
        agent.terminate()
        agent.wait(20)


def test_doctor_starts_a_container_for_real_with_and_without_limits(engine) -> None:
    from fogmesh.ops.host_checks import check_container_engine
    check = check_container_engine(IMAGE)
    assert check.status == "ok", check
    assert f"podman at {engine.path}: started and removed a container of {IMAGE}" in check.detail
    assert "with a memory and CPU limit" in check.detail


@pytest.mark.parametrize("conf, says, fix", [
    # a limit no box may raise (above fs.nr_open): runc fails as it does where rlimits cannot be raised at all
    ('[containers]\ndefault_ulimits = ["nofile=2000000000:2000000000"]\n[engine]\nruntime = "runc"\n',
     "resource limits (rlimits)", "`default_ulimits = []` under [containers]"),
    ('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "no-such-runtime"\n',
     "OCI runtime it is set to use is not installed", '`runtime = "runc"` under [engine]'),
])
def test_doctor_says_why_no_container_can_start_and_what_to_set(engine, tmp_path, monkeypatch, conf, says,
                                                                 fix) -> None:
    from fogmesh.ops.host_checks import check_container_engine
    (tmp_path / "containers.conf").write_text(conf)
    monkeypatch.setenv("CONTAINERS_CONF", str(tmp_path / "containers.conf"))
    check = check_container_engine(IMAGE, kinds=True)
    assert check.status == "fail" and says in check.detail and fix in check.fix, check


def test_a_box_where_no_container_can_start_is_a_warning_unless_the_doctor_is_asked_about_container_kinds(
        engine, mosquitto_broker, root, tmp_path):
    # podman installed on a box that cannot set rlimits: an agent without --image-kind never starts a
    # container, so `fogmesh doctor` (a service's ExecStartPre, a fleet script) must not exit 1 for it
    (tmp_path / "containers.conf").write_text('[containers]\ndefault_ulimits = ["nofile=2000000000:2000000000"]\n'
                                              '[engine]\nruntime = "runc"\n')

    def doctor(*more: str) -> tuple[int, dict[str, dict]]:
        done = subprocess.run([sys.executable, "-m", "fogmesh", "doctor", "--broker", mosquitto_broker.url,
                               "--root", root, "--json", "--clock-wait", "0.2", "--timeout", "3", "--ws-port",
                               str(free_port()), "--state-dir", str(tmp_path / "state"), *more],
                              env={**os.environ, "CONTAINERS_CONF": str(tmp_path / "containers.conf")},
                              capture_output=True, text=True, timeout=120)
        return done.returncode, {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    code, checks = doctor()
    assert checks["containers"]["status"] == "warn", checks["containers"]
    assert "resource limits (rlimits)" in checks["containers"]["detail"]
    assert "default_ulimits = []" in checks["containers"]["fix"] and "--containers" in checks["containers"]["fix"]
    assert code == 0, checks
    for asked in (["--containers"], ["--container-image", IMAGE]):
        code, checks = doctor(*asked)
        assert (code, checks["containers"]["status"]) == (1, "fail"), (asked, checks["containers"])


def test_doctor_on_a_box_with_no_image_says_how_to_get_one_and_pulls_nothing(engine, tmp_path, monkeypatch) -> None:
    from fogmesh.ops.host_checks import check_container_engine
    store = tmp_path / "store"                       # an engine storage of its own, empty
    (tmp_path / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{store}/run"\n'
                                           f'graphroot = "{store}/graph"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(tmp_path / "storage.conf"))
    check = check_container_engine()
    assert check.status == "warn" and "no image on this box" in check.detail, check
    assert "podman pull" in check.fix and "--container-image" in check.fix
    assert podman("images", "-q").strip() == ""       # nothing was pulled into it
    absent = check_container_engine("localhost/fogmesh-no-such-image:1")
    assert absent.status == "fail" and "is not on this box (nothing is pulled)" in absent.detail
    assert podman("images", "-q").strip() == ""


# -- service containers: one long-running container per kind, tasks over a Unix socket -------

SERVICE_CODE = """
import json, os, socketserver, time
class Task(socketserver.StreamRequestHandler):
    def handle(self):
        args = json.loads(self.rfile.readline())
        if args.get("crash"):
            os._exit(3)
        if args.get("hang"):
            time.sleep(600)        # a service that hangs
        if args.get("garbage"):
            self.wfile.write(b"not json\\n")
            return
        if "values" not in args:
            self.wfile.write(json.dumps({"error": "values missing", "code": "bad_args"}).encode() + b"\\n")
            return
        self.wfile.write(json.dumps({"result": {"sum": sum(args["values"]), "pid": os.getpid(),
                                                "started": STARTED}}).encode() + b"\\n")
STARTED = time.time()
path = os.environ["FOGMESH_SOCKET"]
if os.path.exists(path):
    os.unlink(path)
socketserver.ThreadingUnixStreamServer(path, Task).serve_forever()
"""


def container_exists(name: str) -> bool:
    """``podman container exists``: 0 yes, 1 no; anything else is podman failing, not an answer."""
    done = subprocess.run(["podman", "container", "exists", name], capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), f"podman container exists failed ({done.returncode}): {done.stderr[-1500:]}"
    return done.returncode == 0


@pytest.fixture
def service(engine: Engine, agents, broker, root, tmp_path):
    from fogmesh.container_services import service_kind
    kind = service_kind("ssum", IMAGE, engine=engine, agent=f"c3{root[-4:]}", state_dir=tmp_path,
                        command=["python3", "-c", SERVICE_CODE], timeout_s=3)
    agent = agents("c3", broker.url, root, registry=Registry.from_entry_points().with_kinds(kind),
                   service_idle_s=2.0)
    return agent, kind.handler


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_service_kind_starts_its_container_on_the_first_task_and_serves_the_next_ones_from_it(
        service, broker, root) -> None:
    _agent, handler = service
    assert not container_exists(handler.name)
    with FogClient(broker.url, root=root) as client:
        first = client.submit("ssum", {"values": [1, 2]}, timeout=60)
        second = client.submit("ssum", {"values": [3]}, timeout=60)
    assert first.ok and second.ok and first.value["sum"] == 3 and second.value["sum"] == 3
    assert first.value["started"] == second.value["started"]       # one container, started once
    assert container_exists(handler.name)


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_an_idle_service_container_is_stopped_and_the_next_task_starts_it_again(service, broker, root) -> None:
    _agent, handler = service
    with FogClient(broker.url, root=root) as client:
        first = client.submit("ssum", {"values": [1]}, timeout=60)
        wait_until(lambda: not container_exists(handler.name), timeout=30, what="the idle service stopped")
        again = client.submit("ssum", {"values": [1]}, timeout=60)
    assert first.ok and again.ok and again.value["started"] > first.value["started"]


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_no_service_container_is_left_running_after_the_agent_stops(service, broker, root) -> None:
    agent, handler = service
    with FogClient(broker.url, root=root) as client:
        assert client.submit("ssum", {"values": [1]}, timeout=60).ok
    agent.stop(timeout=5)
    assert not container_exists(handler.name)


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
@pytest.mark.parametrize("args, code, says", [({"crash": 1}, "handler_error", "without an answer (it exited with 3)"),
                                              ({"garbage": 1}, "handler_error", "no JSON"),
                                              ({"hang": 1}, "handler_error", "did not answer within 3 s"),
                                              ({}, "bad_args", "values missing")])
def test_a_service_that_crashes_hangs_prints_garbage_or_refuses_gets_a_clear_error_and_serves_again(
        service, broker, root, args, code, says) -> None:
    with FogClient(broker.url, root=root) as client:
        bad = client.submit("ssum", args, timeout=60)
        good = client.submit("ssum", {"values": [2]}, timeout=60)
    assert bad.error is not None and bad.error.code == code and says in bad.error.message, bad.error
    assert good.ok and good.value["sum"] == 2


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_container_over_its_memory_limit_gets_a_clear_error(engine, agents, broker, root, tmp_path,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)                       # the agent's (and its workers') working directory: a fresh one
    hog = image_kind("hog", IMAGE, engine=engine, memory="64m",
                     command=["python3", "-c", "x = bytearray(300 * 1024 * 1024); print('{}')"])
    agents("c4", broker.url, root, registry=Registry.from_entry_points().with_kinds(hog))
    with FogClient(broker.url, root=root) as client:
        r = client.submit("hog", {}, timeout=60)
    assert r.error is not None and "out of memory" in r.error.message and "64m" in r.error.message, r.error
    # conmon's mark of an OOM kill lands in the engine's working directory: not the agent's
    assert list(tmp_path.iterdir()) == [], "the engine wrote into the agent's working directory"


def test_a_task_whose_container_cannot_start_says_why_and_what_to_set(engine, tmp_path, monkeypatch) -> None:
    """The engine fails before the kind's command runs (here: a ulimit no box
    may raise): the task's error names the cause and the fix, not only the
    engine's last line."""
    from fogmesh.containers import ContainerError
    (tmp_path / "containers.conf").write_text('[containers]\ndefault_ulimits = ["nofile=2000000000:2000000000"]\n'
                                              '[engine]\nruntime = "runc"\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(tmp_path / "containers.conf"))
    kind = image_kind("csum", IMAGE, engine=engine, command=SUM, timeout_s=20)
    with pytest.raises(ContainerError) as caught:
        kind.handler({"values": [1]})
    said = str(caught.value)
    assert f"no container of {IMAGE} could start" in said and "rlimits" in said, said
    assert "default_ulimits = []" in said, said


def test_bench_containers_prints_the_three_ways_against_raw_mqtt(engine) -> None:
    done = subprocess.run([sys.executable, "-m", "fogmesh", "bench", "containers", "--json", "--image", IMAGE,
                           "--tasks", "5", "--container-tasks", "2"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [r["system"] for r in report["rows"]] == ["raw MQTT request/reply", "worker-process kind",
                                                     "service container kind", "container per task"]
    assert all(r["vs_raw"] > 0 for r in report["rows"]) and report["service_first_task_ms"] > 0


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_the_example_service_container_builds_from_its_dockerfile_and_serves(engine, agents, broker, root,
                                                                             tmp_path) -> None:
    from fogmesh.container_services import service_kind
    example = standin_images.REPO / "examples" / "container-service"
    image = "localhost/fogmesh-test-stats-service:1"
    standin_images.ensure(tmp_path)                  # the Dockerfile's base: python:3.11-slim
    subprocess.run(["podman", "build", "-q", "-t", image, str(example)], check=True, capture_output=True, timeout=300)
    kind = service_kind("cstats", image, engine=engine, agent=f"c5{root[-4:]}", state_dir=tmp_path)
    agents("c5", broker.url, root, registry=Registry.from_entry_points().with_kinds(kind))
    with FogClient(broker.url, root=root) as client:
        good = client.submit("cstats", {"values": [1, 2, 3]}, timeout=60)
        bad = client.submit("cstats", {"values": []}, timeout=60)
    assert good.ok and good.value == {"n": 3, "mean": 2.0, "min": 1, "max": 3}
    assert bad.error is not None and bad.error.code == "bad_args"


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_no_per_task_container_is_left_running_after_the_agent_stops_mid_task(engine, agents, broker, root) -> None:
    owner = f"c6-{root[-6:]}"
    long = image_kind("long", IMAGE, engine=engine, command=["sleep", "60"], timeout_s=120, owner=owner)
    agent = agents(owner, broker.url, root, registry=Registry.from_entry_points().with_kinds(long))
    with FogClient(broker.url, root=root) as client:
        client.send("long", {})
        wait_until(lambda: running_of(owner) != "", timeout=60, what="the task's container running")
        agent.stop(timeout=1)
    assert running_of(owner) == ""
