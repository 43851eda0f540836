"""The systemd units `fogmesh service install` writes: valid for systemd
(`systemd-analyze verify`, no running systemd needed), running the command
line as typed, hardened without breaking GPIO or the camera."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fogmesh.app.cli import main
from fogmesh.ops.units import UnitSpec, quote_arg, unit_name, unit_text

pytestmark = pytest.mark.timeout(60)

ROLE_LINES = {
    "agent": ["--id", "pi-1", "--broker", "mqtts://pi-1@broker.lan:8883?ca=/etc/fogmesh/ca.crt"],
    "device": ["actuator", "--id", "farm-relay", "--pins", "deterrent=relay:17"],
    "bridge": ["--site", "farm", "--cloud", "mqtts://farm@cloud.example:8883?password_file=%d/cloud"],
    "cloud-worker": ["--cloud", "mqtts://worker@cloud.example:8883", "--id", "cw-1"],
    "broker": ["--host", "0.0.0.0", "--port", "1883"],
}


def printed_unit(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["service", "install", "--print", *argv]) == 0
    return capsys.readouterr().out


def verify(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: python -m tests.prerequisites installs it"
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("role", list(ROLE_LINES))
def test_every_role_unit_passes_systemd_analyze_verify_without_a_warning(role, tmp_path, capsys):
    argv = ["--password-file", "/etc/fogmesh/pw", "--credential", "cloud=/etc/fogmesh/cloud.pw", role,
            *ROLE_LINES[role]]
    text = printed_unit(capsys, *argv)
    name = unit_name(UnitSpec(role=role, argv=tuple(ROLE_LINES[role]), python=sys.executable))
    result = verify(tmp_path, name, text)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_a_broken_unit_fails_the_same_verification(tmp_path):
    """The check above can fail: a unit whose command does not exist is refused."""
    text = unit_text(UnitSpec(role="agent", argv=("--id", "x"), python="/nonexistent/python3"))
    assert verify(tmp_path, "fogmesh-agent-x.service", text).returncode != 0


def test_the_unit_runs_the_command_line_as_typed(capsys):
    text = printed_unit(capsys, "agent", *ROLE_LINES["agent"])
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={sys.executable} -m fogmesh agent --id pi-1 --broker "
                          '"mqtts://pi-1@broker.lan:8883?ca=/etc/fogmesh/ca.crt"')


def test_agents_bridges_and_cloud_workers_are_notify_units_with_a_watchdog(capsys):
    for role in ("agent", "bridge", "cloud-worker"):
        lines = printed_unit(capsys, "--watchdog", "20", role, *ROLE_LINES[role]).splitlines()
        assert {"Type=notify", "NotifyAccess=main", "WatchdogSec=20"} <= set(lines), role


def test_devices_and_the_broker_are_plain_units_without_a_watchdog(capsys):
    for role in ("device", "broker"):
        text = printed_unit(capsys, role, *ROLE_LINES[role])
        assert "Type=exec" in text.splitlines() and "WatchdogSec" not in text, role


def test_the_device_unit_keeps_dev_and_sys_and_the_gpio_and_video_groups(capsys):
    lines = printed_unit(capsys, "device", *ROLE_LINES["device"]).splitlines()
    assert "SupplementaryGroups=gpio video" in lines
    assert not {"PrivateDevices=yes", "ProtectKernelTunables=yes"} & set(lines)
    assert {"ProtectSystem=strict", "NoNewPrivileges=yes"} <= set(lines)


def test_other_roles_get_private_devices_and_read_only_kernel_tunables(capsys):
    lines = printed_unit(capsys, "agent", *ROLE_LINES["agent"]).splitlines()
    assert {"PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectSystem=strict"} <= set(lines)
    assert not any(line.startswith("SupplementaryGroups=") for line in lines)


def test_the_password_arrives_as_a_credential_never_in_the_unit(capsys):
    lines = printed_unit(capsys, "--password-file", "/etc/fogmesh/credentials/pi-1.password",
                         "agent", *ROLE_LINES["agent"]).splitlines()
    assert "LoadCredential=password:/etc/fogmesh/credentials/pi-1.password" in lines
    assert "Environment=FOGMESH_PASSWORD_FILE=%d/password" in lines


def test_the_unit_runs_as_a_dedicated_user_with_a_state_directory_and_restarts_on_failure(capsys):
    lines = printed_unit(capsys, "--user", "fogmesh", "agent", *ROLE_LINES["agent"]).splitlines()
    assert {"User=fogmesh", "DynamicUser=yes", "StateDirectory=fogmesh", "Restart=on-failure",
            "Environment=FOGMESH_STATE_DIR=%S/fogmesh", "StandardError=journal"} <= set(lines)
    # exit status 2 means "fix the configuration": restarting cannot help
    assert "RestartPreventExitStatus=2" in lines


def test_a_mistyped_role_option_is_refused_before_anything_is_written(tmp_path, capsys):
    code = main(["service", "install", "--unit-dir", str(tmp_path), "agent", "--id", "pi-1", "--concurency", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "the agent options do not parse" in err and "--concurency" in err
    assert list(tmp_path.iterdir()) == []


def test_install_writes_the_unit_and_says_how_to_start_it(tmp_path, capsys):
    assert main(["service", "install", "--unit-dir", str(tmp_path), "--groups", "",
                 "device", *ROLE_LINES["device"]]) == 0
    unit = tmp_path / "fogmesh-device-actuator-farm-relay.service"
    assert unit.read_text().startswith("# fogmesh-device-actuator-farm-relay.service")
    assert "systemctl enable --now fogmesh-device-actuator-farm-relay.service" in capsys.readouterr().out


def test_an_unwritable_unit_directory_says_to_use_sudo_or_print(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["service", "install", "--unit-dir", str(blocker / "sub"), "broker"]) == 2
    assert "--print" in capsys.readouterr().err


def test_arguments_are_quoted_for_exec_start_and_dollars_are_not_expanded():
    assert quote_arg("plain-1.2:3") == "plain-1.2:3"
    assert quote_arg("two words") == '"two words"'
    assert quote_arg('say "hi"') == '"say \\"hi\\""'
    assert quote_arg("$HOME") == '"$$HOME"'
    assert quote_arg("50%") == "50%%"
    assert quote_arg("x?password_file=%d/cloud") == '"x?password_file=%d/cloud"'


def test_unit_names_tell_two_units_of_one_role_apart():
    def name(role: str, *argv: str) -> str:
        return unit_name(UnitSpec(role=role, argv=argv, python="/usr/bin/python3"))
    assert name("agent", "--id", "pi-1") == "fogmesh-agent-pi-1.service"
    assert name("bridge", "--site=farm") == "fogmesh-bridge-farm.service"
    assert name("device", "sensor", "--id", "greenhouse 3") == "fogmesh-device-sensor-greenhouse\\x203.service"
    assert name("broker") == "fogmesh-broker.service"


def test_the_agent_runs_as_its_unit_says_and_reports_ready(tmp_path, capsys, mosquitto_broker, root):
    """Play systemd's part: the unit's ExecStart, its Environment= lines, the
    credential copied to %d, the state directory at %S, a notify socket."""
    import os
    import shlex
    import socket

    secret = tmp_path / "pw"
    secret.write_text("unused-on-an-open-broker\n")
    text = printed_unit(capsys, "--password-file", str(secret), "agent", "--id", "svc-1", "--broker",
                        mosquitto_broker.url, "--root", root, "--concurrency", "1")
    creds, state = tmp_path / "credentials", tmp_path / "state"
    creds.mkdir()
    for line in text.splitlines():
        if line.startswith("LoadCredential="):
            name, _, path = line.removeprefix("LoadCredential=").partition(":")
            (creds / name).write_bytes(Path(path).read_bytes())

    def expand(value: str) -> str:
        return value.replace("%d", str(creds)).replace("%S", str(state)).replace("$$", "$").replace("%%", "%")
    env = dict(os.environ)
    for line in text.splitlines():
        if line.startswith("Environment="):
            key, _, value = expand(line.removeprefix("Environment=")).strip('"').partition("=")
            env[key] = value
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify")
    notify.bind(notify_path)
    notify.settimeout(30)
    env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000")
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(expand(exec_start.removeprefix("ExecStart=")))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        got = b""
        while b"READY=1" not in got:
            got = notify.recv(4096)
        assert b"STATUS=online" in got
        assert env["FOGMESH_PASSWORD_FILE"] == str(creds / "password")
        assert any(state.glob("*")), "the agent keeps its journal in the unit's state directory"
    finally:
        proc.terminate()
        proc.wait(20)
        notify.close()
