"""What agents and bridges tell systemd over the notify socket: ready once
online, a status line, and watchdog pings that come from the dispatcher loop
only, so a hung loop stops them (and systemd restarts the process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.cloud_bridge.bridge import Bridge
from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.service_notify import ServiceNotifier
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


class NotifySocket:
    """The socket systemd would hold: collects every datagram sent to it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, OSError):
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if key in m and t >= since]

    def wait_for(self, key: str, timeout: float = 20.0, since: float = 0.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.with_key(key, since)
            if found:
                return found[0][1]
            time.sleep(0.02)   # polled: the socket's reader thread appends what comes
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifySocket]:
    # AF_UNIX paths are limited to 108 bytes: a short directory of its own
    directory = Path(tmp_path_factory.mktemp("n"))
    s = NotifySocket(directory / "notify")
    yield s
    s.close()


class FreezableMonitor(HostMonitor):
    """A host monitor whose reading can hang, as a stuck sysfs read would:
    the agent reads it from its dispatcher loop."""

    def __init__(self) -> None:
        super().__init__()
        self.thawed = threading.Event()
        self.thawed.set()
        self.frozen_inside = threading.Event()

    def read(self, *, running: int = 0):  # type: ignore[no-untyped-def]
        if not self.thawed.is_set():
            self.frozen_inside.set()
            self.thawed.wait(30)
        return super().read(running=running)


# -- the notifier alone --------------------------------------------------------------

def test_without_a_notify_socket_every_call_does_nothing():
    n = ServiceNotifier.from_env({})
    assert not n.enabled and n.next_beat_at == float("inf")
    n.ready("online")
    n.beat(0.0, lambda: "online")
    n.stopping("bye")


def test_the_watchdog_period_comes_from_watchdog_usec_for_this_process_only():
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "123"}
    assert ServiceNotifier.from_env(env, pid=123).watchdog_s == 30.0
    assert ServiceNotifier.from_env(env, pid=456).watchdog_s is None
    assert ServiceNotifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_s is None


def test_ready_and_status_lines_arrive_on_the_socket(notify_socket):
    n = ServiceNotifier(notify_socket.path, watchdog_s=10)
    n.ready("online, 0 queued")
    assert notify_socket.wait_for("READY") == {"READY": "1", "STATUS": "online, 0 queued"}
    n.close()


def test_an_abstract_socket_address_is_reached(tmp_path):
    name = f"fogmesh-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    try:
        ServiceNotifier("@" + name).ready("online")
        assert server.recv(4096).startswith(b"READY=1")
    finally:
        server.close()


def test_pings_come_every_half_period_and_the_status_only_when_it_changes(notify_socket):
    n = ServiceNotifier(notify_socket.path, watchdog_s=10)
    for now, status in ((0.0, "a"), (1.0, "a"), (4.9, "a"), (5.0, "a"), (6.5, "b")):
        n.beat(now, lambda s=status: s)
    notify_socket.wait_for("STATUS")
    wait_until(lambda: len(notify_socket.with_key("WATCHDOG")) >= 2 and len(notify_socket.with_key("STATUS")) >= 2,
               timeout=5, what="both datagrams")
    assert len(notify_socket.with_key("WATCHDOG")) == 2           # at 0 and at 5
    assert [m["STATUS"] for _, m in notify_socket.with_key("STATUS")] == ["a", "b"]
    n.close()


def test_a_missing_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    n = ServiceNotifier(str(tmp_path / "nobody-listens"), watchdog_s=1)
    for now in range(5):
        n.beat(float(now), lambda: "online")
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


# -- a live agent and bridge -----------------------------------------------------------

def test_an_agent_is_ready_once_online_and_its_loop_feeds_the_watchdog(notify_socket, broker, root, agents):
    agent = agents("wd-1", broker.url, root, notifier=ServiceNotifier(notify_socket.path, watchdog_s=0.6))
    ready = notify_socket.wait_for("READY")
    assert ready["STATUS"].startswith("online, 0 queued, 0/2 running")
    started = time.monotonic()
    wait_until(lambda: len(notify_socket.with_key("WATCHDOG", since=started)) >= 3, timeout=1.5,
               what="three pings in 1.5 s (one per half of watchdog_s)")
    agent.stop(timeout=5)
    assert notify_socket.wait_for("STOPPING")["STOPPING"] == "1"


def test_a_hung_dispatcher_loop_stops_the_watchdog_pings(notify_socket, broker, root, agents):
    monitor = FreezableMonitor()
    agents("wd-2", broker.url, root, presence_period=0.3, monitor=monitor,
           notifier=ServiceNotifier(notify_socket.path, watchdog_s=0.6))
    notify_socket.wait_for("WATCHDOG", since=time.monotonic())
    monitor.thawed.clear()                 # the next presence reading hangs the loop
    assert monitor.frozen_inside.wait(10)
    hung_at = time.monotonic()
    time.sleep(1.5)                        # five ping periods with the loop hung
    late = notify_socket.with_key("WATCHDOG", since=hung_at + 0.1)
    monitor.thawed.set()
    assert late == [], "the watchdog was fed while the dispatcher loop hung"
    notify_socket.wait_for("WATCHDOG", since=time.monotonic())   # and resumes with the loop


def test_a_bridge_is_ready_with_its_uplink_state_and_feeds_the_watchdog(notify_socket, broker, root, tmp_path):
    bridge = Bridge(site="wd", edge=broker.url, cloud="mqtt://127.0.0.1:1", root=root,
                    cloud_root=f"{root}/cloud", store_path=tmp_path / "outbox.db",
                    notifier=ServiceNotifier(notify_socket.path, watchdog_s=0.6))
    bridge.start()
    try:
        assert notify_socket.wait_for("READY")["STATUS"] == "online, uplink down, backlog 0"
        started = time.monotonic()
        wait_until(lambda: len(notify_socket.with_key("WATCHDOG", since=started)) >= 2, timeout=1.0,
                   what="two pings in a second")
    finally:
        bridge.stop()


def test_the_agent_command_reports_ready_to_the_socket_systemd_names(notify_socket, broker, root):
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "wd-cli", "--broker", broker.url,
                             "--root", root, "--concurrency", "1", "--log-level", "WARNING"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert notify_socket.wait_for("READY", timeout=30)["STATUS"].startswith("online")
        notify_socket.wait_for("WATCHDOG", since=time.monotonic())
    finally:
        proc.terminate()
        proc.wait(20)
    assert notify_socket.wait_for("STOPPING")
