"""Launch a real mosquitto (Debian package ``mosquitto``) on a free loopback port.

Used by the tests, the benchmarks and anyone who wants the production broker
locally. The config is generated from the same settings as
``broker/mosquitto.conf`` so tests exercise what sites run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from fogmesh.broker.ports import free_port, wait_port
from fogmesh.broker.processes import stop_processes
from fogmesh.errors import BrokerError

CONF_TEMPLATE = """\
{listener}
set_tcp_nodelay true
persistence {persistence}
persistence_location {datadir}/
autosave_interval 1
max_inflight_messages 100
max_queued_messages 0
max_queued_bytes 268435456
log_dest file {datadir}/mosquitto.log
log_type error
log_type warning
log_type notice
{extra}
"""


def mosquitto_binary() -> str:
    """Path to mosquitto, or a BrokerError that says how to install it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto is not installed; on Debian/Ubuntu run: "
                      "sudo apt-get install mosquitto mosquitto-clients")


def _let_mosquitto_write(directory: Path) -> None:
    """mosquitto started as root drops to the ``mosquitto`` user before it
    opens its log and persistence file: in a directory that user cannot
    reach or write (``mkdtemp`` makes them 0700, and pytest's temp tree is
    0700 all the way down) it silently runs with neither, so a "restart
    with persistence" was a broker that forgot everything. Give the
    directory to that user, as Debian gives it /var/lib/mosquitto."""
    if os.geteuid() != 0:
        return
    import pwd
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    os.chown(directory, user.pw_uid, user.pw_gid)


class Mosquitto:
    """One mosquitto process; ``start()``, ``stop()`` (SIGTERM), ``kill()`` (SIGKILL).

    Restarting keeps the port and the persistence directory, so a restarted
    broker gets back its sessions and queued messages.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 workdir: str | Path | None = None, persistence: bool = True,
                 extra_conf: str = "", secure_dir: str | Path | None = None,
                 ws_port: int | None = None) -> None:
        """``secure_dir``: a directory made by ``python -m fogmesh.broker.secure``: then the
        listener is TLS with password logins and its ACL, anonymous access off.
        ``ws_port``: also MQTT over WebSockets there (TLS too with ``secure_dir``)."""
        self.host = host
        self.port = port or free_port(host)
        self.ws_port = ws_port
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fogmesh-mosquitto-"))
        self._datadir: Path | None = None
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.secure_dir = Path(secure_dir).resolve() if secure_dir else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.secure_dir else 'mqtt'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        if self.ws_port is None:
            return None
        return f"{'wss' if self.secure_dir else 'ws'}://{self.host}:{self.ws_port}"

    def _listener(self) -> str:
        if self.secure_dir is None:
            ws = f"\nlistener {self.ws_port} {self.host}\nprotocol websockets" if self.ws_port else ""
            return f"listener {self.port} {self.host}{ws}\nallow_anonymous true"
        from fogmesh.broker.secure import listener_conf
        return listener_conf(self.secure_dir, port=self.port, bind=self.host, ws_port=self.ws_port)

    @property
    def datadir(self) -> Path:
        """Where mosquitto keeps its persistence file and log, the same across
        restarts of this broker: a directory of its own in the system's temp
        directory, which the ``mosquitto`` user can reach (see
        :func:`_let_mosquitto_write`), whatever ``workdir`` is under."""
        if self._datadir is None:
            self._datadir = Path(tempfile.mkdtemp(prefix="fogmesh-mosquitto-data-"))
            _let_mosquitto_write(self._datadir)
        return self._datadir

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        binary = mosquitto_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(CONF_TEMPLATE.format(
            listener=self._listener(), datadir=self.datadir,
            persistence="true" if self.persistence else "false", extra=self.extra_conf))
        self.proc = subprocess.Popen([binary, "-c", str(self.conf_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.host, self.port, timeout) or \
                (self.ws_port is not None and not wait_port(self.host, self.ws_port, timeout)):
            err = self._drain_stderr()
            self.kill()
            raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within "
                              f"{timeout:g} s: {err or 'see ' + str(self.datadir / 'mosquitto.log')}")
        return self

    def _drain_stderr(self) -> str:
        if self.proc and self.proc.poll() is not None and self.proc.stderr:
            return self.proc.stderr.read().decode(errors="replace").strip()
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        stop_processes([self.proc], timeout)
        self._close()

    def kill(self) -> None:
        """SIGKILL: the broker dies mid-flight, as in a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._datadir is not None:
            shutil.rmtree(self._datadir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
