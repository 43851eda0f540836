"""`fogmesh doctor` on good set-ups (every check ok or a plain fact) and on
broken ones (the failing check says what to do), against real brokers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port
from fogmesh.broker.secure import Logins, generate
from fogmesh.devices.vision import write_video
from fogmesh.ops.doctor import DoctorOptions, run_checks
from fogmesh.ops.host_checks import check_camera, check_pins, check_state_dir
from fogmesh.ops.report import Check, exit_status, render_table
from tests.tinydisk import fill, mounted_tmpfs

pytestmark = pytest.mark.timeout(90)

NO_WS = (free_port(),)     # a closed port: the WebSocket probe answers at once


@pytest.fixture(autouse=True)
def no_container_engine(monkeypatch) -> None:
    """These checks are the broker's and the box's other parts: the container
    engine's (a container started for real) is checked in tests/test_containers.py."""
    monkeypatch.setenv("FOGMESH_CONTAINER_ENGINE", "none")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def doctor(url: str, root: str, tmp_path: Path, **options: object) -> dict[str, Check]:
    options.setdefault("clock_wait_s", 4.0)
    options.setdefault("timeout", 3.0)
    options.setdefault("ws_ports", NO_WS)
    return by_name(run_checks(DoctorOptions(broker=url, root=root, state_dir=tmp_path / "state",
                                            **options)))  # type: ignore[arg-type]


def problems(checks: dict[str, Check]) -> list[Check]:
    return [c for c in checks.values() if c.status in ("warn", "fail")]


# -- good set-ups ------------------------------------------------------------------------

def test_a_plain_broker_with_a_running_agent_checks_all_ok(broker, root, agents, tmp_path):
    agents("peer-1", broker.url, root, presence_period=0.5)
    checks = doctor(broker.url, root, tmp_path, ident="pi-9")
    assert problems(checks) == []
    assert checks["broker"].status == checks["login"].status == checks["acl"].status == "ok"
    assert checks["shared subs"].status == "ok"
    assert checks["clock"].status == "ok" and "peer-1" in checks["clock"].detail
    assert checks["state dir"].status == "ok"


@pytest.fixture(scope="module")
def secured() -> tuple[Path, Mosquitto]:
    out = Path(tempfile.mkdtemp(prefix="fogmesh-doctor-"))
    generate(out, Logins(devices=("sensor-7",), agents=("pi-1", "pi-2"), operators=("ops",), root="fog/v1"),
             hosts=["localhost", "127.0.0.1"])
    broker = Mosquitto(secure_dir=out).start()
    yield out, broker
    broker.cleanup()
    shutil.rmtree(out, ignore_errors=True)


def secure_url(secured: tuple[Path, Mosquitto], login: str, *, ca: bool = True, password: Path | None = None) -> str:
    out, broker = secured
    pw = password or out / "credentials" / f"{login}.password"
    query = (f"ca={out / 'ca.crt'}&" if ca else "") + f"password_file={pw}"
    return f"mqtts://{login}@127.0.0.1:{broker.port}?{query}"


def test_a_secured_broker_checks_all_ok_for_each_role(secured, tmp_path):
    for role, login in (("agent", "pi-1"), ("device", "sensor-7"), ("operator", "ops")):
        checks = doctor(secure_url(secured, login), "fog/v1", tmp_path, role=role, clock_wait_s=0.5)
        assert problems(checks) == [], (role, problems(checks))
        assert checks["tls"].status == "ok" and "TLS" in checks["tls"].detail
        assert checks["acl"].status == "ok", role


# -- broken set-ups -----------------------------------------------------------------------

def test_a_broker_that_is_not_running_fails_with_how_to_start_one(root, tmp_path):
    checks = doctor(f"mqtt://127.0.0.1:{free_port()}", root, tmp_path)
    assert checks["broker"].status == "fail" and "fogmesh broker" in checks["broker"].fix
    assert checks["login"].status == "skip" and checks["acl"].status == "skip"


def test_a_wrong_password_fails_the_login_with_where_the_password_comes_from(secured, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("not-it")
    checks = doctor(secure_url(secured, "pi-1", password=wrong), "fog/v1", tmp_path)
    assert checks["tls"].status == "ok"
    assert checks["login"].status == "fail" and "FOGMESH_PASSWORD_FILE" in checks["login"].fix


def test_an_untrusted_certificate_fails_tls_with_the_ca_option(secured, tmp_path):
    checks = doctor(secure_url(secured, "pi-1", ca=False), "fog/v1", tmp_path)
    assert checks["tls"].status == "fail" and "?ca=" in checks["tls"].fix
    assert checks["login"].status == "skip"


def test_a_certificate_that_expires_soon_is_a_warning_with_how_to_renew(tmp_path):
    out = Path(tempfile.mkdtemp(prefix="fogmesh-doctor-short-"))
    try:
        generate(out, Logins(agents=("pi-1",), root="fog/v1"), hosts=["127.0.0.1"], days=10)
        broker = Mosquitto(secure_dir=out).start()
        try:
            url = (f"mqtts://pi-1@127.0.0.1:{broker.port}?ca={out / 'ca.crt'}"
                   f"&password_file={out / 'credentials' / 'pi-1.password'}")
            checks = doctor(url, "fog/v1", tmp_path, clock_wait_s=0.5)
        finally:
            broker.cleanup()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert checks["tls"].status == "warn" and "expires in" in checks["tls"].detail
    assert "renew" in checks["tls"].fix


def test_a_login_the_acl_does_not_give_the_roles_topics_fails_with_the_acl_line(secured, tmp_path):
    checks = doctor(secure_url(secured, "sensor-7"), "fog/v1", tmp_path, role="agent", ident="pi-1",
                    clock_wait_s=0.5)
    assert checks["login"].status == "ok"
    assert checks["acl"].status == "fail"
    assert "topic readwrite fog/v1/agents/pi-1/doctor" in checks["acl"].fix


def test_a_clock_far_from_a_peers_is_a_warning_with_how_to_sync(broker, root, agents, tmp_path):
    agents("skewed", broker.url, root, presence_period=0.5, wall_clock=lambda: time.time() + 60)
    checks = doctor(broker.url, root, tmp_path)
    assert checks["clock"].status == "warn" and "behind skewed's" in checks["clock"].detail
    assert "timedatectl set-ntp" in checks["clock"].fix


def test_a_read_only_state_directory_fails_with_where_to_put_it(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", size_kb=1024, read_only=True) as ro:
        check = check_state_dir(ro)
    assert check.status == "fail" and "FOGMESH_STATE_DIR" in check.fix


def test_a_nearly_full_state_disk_fails_with_how_much_is_needed(tmp_path):
    with mounted_tmpfs(tmp_path / "small", size_kb=32 * 1024) as small:
        fill(small, leave_bytes=1024 * 1024)
        check = check_state_dir(small / "state")
    assert check.status == "fail" and "64 MiB" in check.fix


def test_free_pins_can_be_claimed_and_a_bad_or_doubled_pin_fails_with_the_fix():
    assert check_pins("deterrent=relay:17,lamp=led:27", factory_kind="mock").status == "ok"
    for spec in ("deterrent=relay:99", "deterrent=relay:17,lamp=led:17"):
        check = check_pins(spec, factory_kind="mock")
        assert check.status == "fail" and "pinout" in check.fix, spec
    assert check_pins("deterrent=valve:17", factory_kind="mock").status == "fail"


def test_a_readable_camera_source_gives_a_frame_and_a_missing_one_fails(tmp_path):
    video = tmp_path / "cam.avi"
    write_video(video, [np.zeros((48, 64, 3), np.uint8)] * 3)
    assert check_camera(f"video:{video}").detail.endswith("a 64x48 frame")
    missing = check_camera("camera:77")
    assert missing.status == "fail" and "/dev/video" in missing.fix


def test_the_exit_status_is_one_only_when_a_check_failed():
    assert exit_status([Check("a", "ok", ""), Check("b", "warn", "", "x")]) == 0
    assert exit_status([Check("a", "fail", "", "x")]) == 1
    assert "-> x" in render_table([Check("b", "warn", "d", "x")], title="t")


def test_the_command_prints_json_and_exits_by_the_verdict(broker, root, tmp_path):
    def run(url: str) -> tuple[int, dict]:
        done = subprocess.run([sys.executable, "-m", "fogmesh", "doctor", "--broker", url, "--root", root,
                               "--json", "--clock-wait", "0.5", "--timeout", "3", "--ws-port", str(NO_WS[0]),
                               "--state-dir", str(tmp_path / "state")],
                              capture_output=True, text=True, timeout=60)
        return done.returncode, json.loads(done.stdout)
    code, report = run(broker.url)
    assert code == 0 and report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"broker", "tls", "login", "acl", "clock", "state dir"}
    code, report = run(f"mqtt://127.0.0.1:{free_port()}")
    assert code == 1 and report["ok"] is False


def test_for_a_device_a_broker_that_drops_tasks_in_a_restart_is_a_warning_with_how_to_resend(broker, root,
                                                                                              tmp_path):
    checks = doctor(broker.url, root, tmp_path, role="device", ident="sensor-7", clock_wait_s=0.5)
    restarts = checks["restarts"]
    assert restarts.status == "warn" and "attempt" in restarts.fix
    assert ("mosquitto" if broker.name == "mosquitto" else "fogmesh embedded") in restarts.detail


def test_what_a_restart_drops_is_named_per_broker_and_only_warned_to_devices():
    from fogmesh.ops.broker_checks import restart_losses
    old = restart_losses("mosquitto version 2.0.11", role="device")
    assert old.status == "warn" and "$share" in old.detail and "2306" in old.detail
    assert "2306" not in restart_losses("mosquitto version 2.0.18", role="device").detail
    assert restart_losses("mosquitto version 2.0.18", role="agent").status == "info"
    assert restart_losses("mosquitto version 2.0.11", role="bridge").status == "info"
    assert restart_losses("fogmesh embedded broker (amqtt 0.12.1)", role="device").status == "warn"
    assert restart_losses(None, role="device").status == "info"


def test_an_agent_without_trust_keys_is_told_it_takes_no_deployment_and_a_good_key_is_named(tmp_path):
    from fogmesh.deploy.signing import SigningKey
    from fogmesh.ops.host_checks import check_trust_keys
    none = check_trust_keys((), role="agent")
    assert none.status == "info" and "--trust-key" in none.fix
    key = SigningKey.generate()
    pub = key.save(tmp_path / "ops.key")
    good = check_trust_keys((str(pub),), role="agent")
    assert good.status == "ok" and key.public.key_id in good.detail


def test_an_unreadable_or_world_writable_trust_key_is_a_failure_or_a_warning(tmp_path):
    from fogmesh.deploy.signing import SigningKey
    from fogmesh.ops.host_checks import check_trust_keys
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    assert check_trust_keys((str(bad),), role="agent").status == "fail"
    pub = SigningKey.generate().save(tmp_path / "ops.key")
    pub.chmod(0o666)
    loose = check_trust_keys((str(pub),), role="agent")
    assert loose.status == "warn" and "chmod go-w" in loose.fix


# -- a failover list (a cluster's nodes) and --amqp URLs, some nodes down ------------------
# (RabbitMQ itself, with a node stopped: tests/test_cluster.py)

def test_the_verdict_over_a_failover_list_is_ok_warn_when_some_answer_and_fail_when_none_does():
    from fogmesh.ops.failover import NodeAnswer, node_checks
    up, down = NodeAnswer("a:1", True, "accepts"), NodeAnswer("b:2", False, "connection refused", "start it")
    one = node_checks("broker", [down], label="mqtt node")
    assert [(c.name, c.status) for c in one] == [("broker", "fail")] and one[0].fix == "start it"
    assert "b:2: connection refused" in one[0].detail
    every = node_checks("broker", [up, up], label="mqtt node")
    assert [c.status for c in every] == ["ok", "ok", "ok"] and "all 2 nodes answer" in every[0].detail
    some = node_checks("broker", [down, up], label="mqtt node")
    assert [(c.name, c.status) for c in some] == [("broker", "warn"), ("mqtt node 1", "fail"),
                                                  ("mqtt node 2", "ok")]
    assert "1 of 2 nodes answer; not b:2" in some[0].detail
    assert some[0].fix.startswith("start it") and some[1].detail == "b:2: connection refused"
    assert exit_status(some) == 0 and "  mqtt node 1" in render_table(some, title="t")    # a node's line counts not
    none = node_checks("broker", [down, down], label="mqtt node")
    assert none[0].status == "fail" and none[0].fix == "start it" and exit_status(none) == 1


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_failover_list_whose_first_node_is_down_warns_and_checks_the_broker_through_the_next(
        broker, root, agents, tmp_path):
    agents("peer-1", broker.url, root, presence_period=0.5)
    dead = free_port()
    live = broker.url.split("://", 1)[1]
    checks = doctor(f"mqtt://127.0.0.1:{dead},{live}", root, tmp_path)
    assert checks["broker"].status == "warn", checks["broker"]
    assert f"1 of 2 nodes answer; not 127.0.0.1:{dead}" in checks["broker"].detail
    assert "fogmesh broker" in checks["broker"].fix
    assert checks["mqtt node 1"].status == "fail" and "connection refused" in checks["mqtt node 1"].detail
    assert checks["mqtt node 2"].status == "ok"
    # the rest is asked of the node that answers
    assert checks["login"].status == checks["acl"].status == checks["shared subs"].status == "ok"
    assert checks["clock"].status == "ok" and exit_status(list(checks.values())) == 0


def test_a_failover_list_with_no_node_up_fails_with_a_reason_for_each(root, tmp_path):
    ports = free_port(), free_port()
    checks = doctor(f"mqtt://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", root, tmp_path)
    assert checks["broker"].status == "fail" and "none of the 2 nodes answers" in checks["broker"].detail
    assert all("connection refused" in checks[f"mqtt node {i}"].detail for i in (1, 2))
    assert checks["login"].status == "skip"


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_amqp_urls_that_do_not_answer_each_get_a_reason_and_the_dispatch_line_says_amqp(broker, root, tmp_path):
    mqtt_port = broker.url.rsplit(":", 1)[1]
    nothing = free_port()
    urls = (f"amqp://fog:secret@127.0.0.1:{nothing}/", f"amqp://fog:secret@127.0.0.1:{mqtt_port}/")
    checks = doctor(broker.url, root, tmp_path, amqp=urls)
    amqp = checks["amqp queue"]
    assert amqp.status == "fail" and "none of the 2 nodes answers" in amqp.detail and "secret" not in amqp.detail
    assert checks["amqp node 1"].detail.startswith(f"127.0.0.1:{nothing}: connection refused")
    assert "not an AMQP 0-9-1 server" in checks["amqp node 2"].detail
    assert "rabbitmq-server" in amqp.fix
    assert "amqp dispatch" in checks["shared subs"].detail and "claim" not in checks["shared subs"].detail


def test_the_command_with_dead_amqp_urls_prints_reasons_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fogmesh", "doctor", "--broker", f"mqtt://127.0.0.1:{free_port()}",
                           "--amqp", f"amqp://guest:guest@127.0.0.1:{free_port()}/", "--clock-wait", "0.5",
                           "--timeout", "2", "--ws-port", str(NO_WS[0]), "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    amqp = next(line for line in done.stdout.splitlines() if "amqp queue" in line)
    assert "fail" in amqp and "connection refused" in amqp


def test_to_an_agent_mosquitto_before_2_0_13_is_named_with_what_holding_its_backlog_costs():
    # a fact, not a warning: Debian 12's mosquitto is the guide's, and a backlog costs memory only by the
    # ten thousand (README, fogmesh bench flood)
    from fogmesh.ops.broker_checks import restart_losses
    old = restart_losses("mosquitto version 2.0.11", role="agent")
    assert old.status == "info" and "2306" in old.detail and "in memory" in old.detail and "MB" in old.detail


def test_the_mqtt5_line_says_which_protocol_agents_connect_with(broker, root, tmp_path):
    # agents pick MQTT 5 where the broker offers it (--mqtt auto, the default): the doctor must not say 3.1.1
    line = doctor(broker.url, root, tmp_path, clock_wait_s=0.2)["mqtt 5"]
    assert line.status == "info"
    if broker.name == "mosquitto":
        assert "agents connect with MQTT 5" in line.detail and "3.1.1" not in line.detail, line
    else:
        assert "agents connect with MQTT 3.1.1" in line.detail, line
