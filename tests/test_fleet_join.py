"""Tier 3 (issue #40): a box joins the fleet with a one-time token and is
revoked in one command, on a real mosquitto (the shipped TLS + logins + ACL
configuration, re-read on SIGHUP) and on the embedded broker (``--auth``),
every fogmesh command a separate process started through the CLI."""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from fogmesh.broker.embedded import EmbeddedBroker
from fogmesh.broker.logins import acl_with_block, hash_password, with_login, without_login
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port
from fogmesh.broker.processes import stop_processes
from fogmesh.broker.secure import Logins, generate
from fogmesh.deploy.signing import SigningKey
from fogmesh.errors import LoginRefused
from fogmesh.identities import RegistrarInfo
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics
from tests.fire_and_forget import Device
from tests.listener import Listener
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Site:
    def __init__(self, kind: str, out: Path) -> None:
        self.kind, self.out = kind, out
        self.root = f"fleet/{uuid.uuid4().hex[:8]}"
        self.topics = Topics(self.root)
        generate(out, Logins(operators=("ops",), fleet=True, root=self.root), hosts=["localhost", "127.0.0.1"])
        # A device as most firmware is (tests/fire_and_forget.py): tasks on the shared topic, replies on its own.
        (out / "credentials" / "dev.password").write_text("dev-password\n")
        (out / "passwd").write_text(with_login((out / "passwd").read_text(), "dev",
                                               hash_password("dev-password", b"0123456789ab")))
        (out / "acl").write_text(acl_with_block((out / "acl").read_text(), "dev", [
            ("write", f"{self.root}/tasks"), ("readwrite", f"{self.root}/replies/dev")]))
        if kind == "mosquitto":
            self.broker = Mosquitto(secure_dir=out).start()
            (out / "mosquitto.pid").write_text(str(self.broker.proc.pid))
            self.reload = ["--reload-pid-file", str(out / "mosquitto.pid")]
            self.base = f"mqtts://{{login}}@127.0.0.1:{self.broker.port}?ca={out / 'ca.crt'}"
        else:
            self.broker = EmbeddedBroker(port=free_port(), auth=out).start()
            self.reload = []
            self.base = f"mqtt://{{login}}@127.0.0.1:{self.broker.port}?"

    def url(self, login: str, password_file: Path | None = None) -> str:
        pw = password_file or self.out / "credentials" / f"{login}.password"
        sep = "&" if self.base.endswith("crt") else ""
        return self.base.format(login=login) + f"{sep}password_file={pw}"

    def close(self) -> None:
        if self.kind == "mosquitto":
            self.broker.cleanup()
        else:
            self.broker.stop()


@pytest.fixture(params=["mosquitto", "embedded"])
def site(request):
    out = Path(tempfile.mkdtemp(prefix="fogmesh-fleet-"))     # not under pytest's 0700 tree (mosquitto reads it)
    s = Site(request.param, out)
    yield s
    s.close()
    shutil.rmtree(out, ignore_errors=True)


def fogmesh(*args, env=None, timeout=90):
    return subprocess.run([sys.executable, "-m", "fogmesh", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start(*args, env=None, log: Path):
    """A long-running command, its output in ``log`` (read when a test fails: a pipe nobody reads would fill)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "fogmesh", *map(str, args)],
                                env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


def await_message(listener: Listener, match, *, what: str, timeout: float = 30.0) -> None:
    """Until ``match(topic, payload)`` holds for a message ``listener`` got (the others are passed over)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload = listener.got.get(timeout=left)
        except queue.Empty:
            break
        if match(topic, payload):
            return
    raise AssertionError(f"timed out waiting for {what}")


def test_a_box_joins_with_a_token_once_and_is_revoked_in_one_command(site, tmp_path):
    t = site.topics
    key = tmp_path / "ops.key"
    SigningKey.generate().save(key)
    procs = []
    ops_drops = []
    watcher = Listener(site.url("ops"), t.fleet_registrar, t.presence_filter, t.fleet_identity("pi-7"))
    watcher.client._on_connection = lambda up: ops_drops.append(up) if not up else None
    try:
        procs.append(start("fleet", "serve", "--dir", site.out, "--broker", site.url("registrar"), "--trust-key",
                           f"{key}.pub", "--state-dir", tmp_path / "registrar", "--root", site.root,
                           "--clear-after", "3", "--log-level", "INFO", *site.reload, log=tmp_path / "registrar.log"))
        wait_until(lambda: RegistrarInfo.decode(watcher.next(t.fleet_registrar, timeout=30)).state == "online",
                   timeout=40, what="the registrar online")

        # the operator: two tokens, and one that is already expired
        enroll = ["fleet", "enroll", "--site", "farm", "--labels", "solar,cam", "--key", key, "--broker",
                  site.url("ops"), "--root", site.root]
        made = fogmesh(*enroll, "--count", 2, "--out", tmp_path / "tokens")
        assert made.returncode == 0, made.stderr
        tokens = (tmp_path / "tokens").read_text().split()
        assert len(tokens) == 2 and made.stdout.split() == tokens
        assert fogmesh(*enroll, "--expires", "0s", "--out", tmp_path / "expired").returncode == 0

        # a box joins into an empty directory, doctor included
        box7 = tmp_path / "box7"
        joined = fogmesh("join", tokens[0], "--dir", box7, "--id", "pi-7",
                         env={"FOGMESH_STATE_DIR": str(tmp_path / "state7")})
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert "joined farm as agent pi-7" in joined.stderr and "fail" not in joined.stdout
        identity = json.loads((box7 / "identity.json").read_text())
        assert (identity["id"], identity["site"], identity["labels"]) == ("pi-7", "farm", ["solar", "cam"])
        assert (box7 / "credentials" / "pi-7.password").stat().st_mode & 0o777 == 0o600
        assert not (box7 / "join.key").exists()
        assert fogmesh("join", tokens[1], "--dir", tmp_path / "box8", "--id", "pi-8", "--no-doctor").returncode == 0

        # both boxes start, each with its own login, as `fogmesh join` said to run them
        for box in ("box7", "box8"):
            ident = json.loads((tmp_path / box / "identity.json").read_text())
            procs.append(start(*ident["command"], "--concurrency", 2, "--log-level", "INFO",
                               env={"FOGMESH_PASSWORD_FILE": ident["password_file"],
                                    "FOGMESH_STATE_DIR": str(tmp_path / f"state-{box}")}, log=tmp_path / f"{box}.log"))
        pi7_process, pi8_process = procs[1:]

        # meanwhile: a token works once; an expired one is refused with the reason
        again = fogmesh("join", tokens[0], "--dir", tmp_path / "other", "--no-doctor")
        assert again.returncode == 2 and "already used (by pi-7)" in again.stderr
        late = fogmesh("join", (tmp_path / "expired").read_text().split()[0], "--dir", tmp_path / "late",
                       "--no-doctor")
        assert late.returncode == 2 and "expired" in late.stderr

        # a joined box cannot speak for another
        pi7_url = site.url("pi-7", box7 / "credentials" / "pi-7.password")
        spy = Listener(site.url("ops"), f"{site.root}/#")
        pi7 = MqttClient(pi7_url)
        pi7.start()
        pi7.publish(t.presence("pi-8"), b'{"forged": true}', retain=True)
        pi7.publish(t.deploy_reported("pi-8"), b'{"forged": true}', retain=True)
        marker = t.agent_topic("pi-7", "doctor")
        pi7.publish(marker, b"marker")
        seen = []
        while (got := spy.got.get(timeout=30))[0] != marker:
            seen.append(got)
        assert not [topic for topic, payload in seen if b"forged" in payload]
        pi7.stop()
        spy.client.stop()

        online = set()
        await_message(watcher, lambda topic, payload: b'"online"' in payload and not online.add(
            t.agent_of_presence(topic)) and {"pi-7", "pi-8"} <= online, what="pi-7 and pi-8 online", timeout=60)

        # revoked under load: its next connect refused, its process gone, its presence gone;
        # the rest of the fleet undisturbed: nothing lost, nothing run twice
        device = Device(site.url("dev"), site.root)
        sender = threading.Thread(target=device.send, args=(700,), kwargs={"ms": 20, "per_s": 100})
        sender.start()
        wait_until(lambda: len(device.replies) >= 30, timeout=30, what="tasks answered before the revoke")
        revoking = start("fleet", "revoke", "pi-7", "--key", key, "--broker", site.url("ops"), "--root", site.root,
                         log=tmp_path / "revoke.log")
        await_message(watcher, lambda topic, payload: topic == t.fleet_identity("pi-7") and b'"revoked"' in payload,
                      what="pi-7 revoked")
        assert sender.is_alive(), "the revoke came after the load: make the load longer"
        with pytest.raises(LoginRefused, match="Not authorized|authori"):
            MqttClient(pi7_url).start(timeout=5)
        assert pi7_process.wait(timeout=30) == 2
        assert "this box's login was revoked" in (tmp_path / "box7.log").read_text()
        assert revoking.wait(timeout=30) == 0, (tmp_path / "revoke.log").read_text()   # once its presence is gone
        sender.join()
        lost, _ = device.settle(timeout=60)
        device.close()
        assert lost == []
        listed = json.loads(fogmesh("fleet", "list", "--broker", site.url("ops"), "--root", site.root,
                                    "--json").stdout)["identities"]
        by_id = {row["id"]: row for row in listed}
        assert by_id["pi-7"]["state"] == "revoked" and by_id["pi-7"]["last_seen"] is None
        assert by_id["pi-8"]["state"] == "active" and by_id["pi-8"]["last_seen"]["state"] == "online"
        assert pi8_process.poll() is None and ops_drops == []
    finally:
        watcher.client.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        stop_processes(procs)


def test_the_embedded_broker_drops_a_removed_login_however_its_files_were_read(tmp_path):
    # The broker reads its files at a CONNECT too: one coming right after a change must not keep
    # the removed login's connections up (its periodic check then saw nothing new to act on).
    out = tmp_path / "site"
    generate(out, Logins(agents=("a1",), operators=("ops",)), hosts=["127.0.0.1"])
    broker = EmbeddedBroker(port=free_port(), auth=out).start()
    url = f"mqtt://{{}}@127.0.0.1:{broker.port}?password_file={out}/credentials/{{}}.password".format
    a1 = MqttClient(url("a1", "a1"), reconnect=False)
    try:
        a1.start()
        (out / "passwd").write_text(without_login((out / "passwd").read_text(), "a1"))
        with pytest.raises(LoginRefused):
            MqttClient(url("a1", "a1")).start(timeout=5)
        wait_until(lambda: not a1.connected.is_set(), timeout=5, what="a1's connection dropped")
    finally:
        a1.stop()
        broker.stop()
