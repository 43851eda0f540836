"""Launch a RabbitMQ node with its MQTT plugin (Debian package
``rabbitmq-server``) on free loopback ports: a broker without shared
subscriptions (agents split tasks with claims). Used by the tests and the
fault suite; start-up takes about 20 s. ``join(other)`` makes two nodes one
cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from fogmesh.broker.ports import free_port, wait_port
from fogmesh.errors import BrokerError

SBIN = Path("/usr/lib/rabbitmq/bin")

CONF = """\
listeners.tcp.default = {amqp_port}
mqtt.listeners.tcp.default = {mqtt_port}
mqtt.allow_anonymous = true
mqtt.default_user = guest
mqtt.default_pass = guest
loopback_users = none
"""


def rabbitmq_available() -> bool:
    return (SBIN / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


class RabbitMQ:
    """One RabbitMQ node: ``start()``, ``stop()``, ``kill()``, ``join(node)``."""

    def __init__(self, *, workdir: str | Path | None = None, name: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fogmesh-rabbitmq-"))
        self.node = f"{name or 'fogmesh'}-{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        w = self.workdir
        return {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(w / "mnesia"), "RABBITMQ_LOG_BASE": str(w / "log"),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_PID_FILE": str(w / "pid"),
                "HOME": str(w.parent / "rabbitmq-home"),       # one Erlang cookie for the nodes of a cluster
                "PATH": f"{SBIN}:{os.environ.get('PATH', '')}"}

    def start(self, timeout: float = 90.0) -> RabbitMQ:
        if not rabbitmq_available():
            raise BrokerError("rabbitmq-server is not installed; on Debian/Ubuntu run: "
                              "sudo apt-get install rabbitmq-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir.parent / "rabbitmq-home").mkdir(exist_ok=True)
        (self.workdir / "rabbitmq.conf").write_text(CONF.format(amqp_port=self.amqp_port, mqtt_port=self.port))
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        log = open(self.workdir / "server.out", "ab")
        self.proc = subprocess.Popen([str(SBIN / "rabbitmq-server")], env=self._env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if not wait_port(self.host, self.port, timeout):
            self.kill()
            raise BrokerError(f"RabbitMQ did not open MQTT on {self.host}:{self.port} within {timeout:g} s "
                              f"(see {self.workdir / 'log'})")
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run([str(SBIN / "rabbitmqctl"), "-n", self.node, *args], env=self._env(),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def join(self, other: RabbitMQ) -> None:
        """Make this node part of ``other``'s cluster (its data is reset)."""
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", other.node)
        self.ctl("start_app")
        if not wait_port(self.host, self.port, 60):
            raise BrokerError(f"RabbitMQ node {self.node} did not reopen MQTT after joining {other.node}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.ctl("stop", timeout=30)
            except (BrokerError, subprocess.TimeoutExpired):
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RabbitCluster:
    """``size`` RabbitMQ nodes on this machine made one cluster (own ports,
    directories and Erlang cookie): what the RabbitMQ tests and ``fogmesh
    bench cluster`` run on. Nodes start in parallel (~20 s), then join the
    first one. ``url`` is the MQTT failover list over every node, ``amqp``
    the nodes' AMQP URLs."""

    def __init__(self, size: int = 3, *, workdir: str | Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fogmesh-rabbit-cluster-"))
        self.nodes = [RabbitMQ(workdir=self.workdir / f"node{i}", name=f"fogmesh{i}") for i in range(size)]

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        import threading
        errors: list[BaseException] = []

        def boot(node: RabbitMQ) -> None:
            try:
                node.start(timeout)
            except BaseException as exc:   # reported below, from the calling thread
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.cleanup()
            raise errors[0]
        first = self.nodes[0]
        first.ctl("await_startup")
        for node in self.nodes[1:]:
            node.join(first)
        return self

    @property
    def url(self) -> str:
        """The MQTT failover list: ``mqtt://127.0.0.1:p1,127.0.0.1:p2,...``."""
        return "mqtt://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def url_from(self, i: int) -> str:
        """The failover list starting at node ``i`` (spread clients over the nodes)."""
        order = self.nodes[i:] + self.nodes[:i]
        return "mqtt://" + ",".join(f"{n.host}:{n.port}" for n in order)

    def amqp_from(self, i: int = 0) -> list[str]:
        order = self.nodes[i:] + self.nodes[:i]
        return [f"amqp://guest:guest@{n.host}:{n.amqp_port}/" for n in order]

    def stop_app(self, i: int) -> None:
        self.nodes[i].ctl("stop_app")

    def start_app(self, i: int) -> None:
        node = self.nodes[i]
        node.ctl("start_app")
        if not wait_port(node.host, node.port, 60):
            raise BrokerError(f"RabbitMQ node {node.node} did not reopen MQTT after start_app")

    def cleanup(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
