"""Worker processes forked from a copy of the agent made before it started
any thread (a zygote, as Android starts its apps).

Why: a worker forked from the agent's own pages shares them with the agent
and with every other worker until one of them writes to a page. Spawned
workers (or multiprocessing's fork server, itself spawned, plus the resource
tracker it starts) each import and hold their own copy of Python and fogmesh:
an idle agent with two workers held ~60 MB of unique memory that way, against
a Pi's budget of 35. Forking the agent itself later would copy paho's threads'
locks in whatever state they are in; the zygote is forked while the agent has
one thread and never starts one, so forking it is safe.

The agent talks to it over one socket, one request at a time (a lock): spawn
(its answer carries the new worker's end of a socketpair, passed as a file
descriptor), kill, and poll for an exit. Only the zygote kills and reaps its
children, so a worker's pid cannot be reused under the agent's feet. The
zygote leaves when that socket closes (the agent stopped, or was killed with
-9), killing the workers it still has. A SIGTERM or Ctrl-C to the agent's
whole process group leaves the zygote and its workers running: the agent
finishes the tasks under way, then stops them.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import struct
import threading
import time
from multiprocessing.connection import Connection
from typing import Callable

from fogmesh.errors import FogmeshError

#: Runs in each worker with its end of the pipe; returning ends the worker.
WorkerMain = Callable[[Connection], None]

_REQUEST = struct.Struct(">ci")   # op, pid
_PID = struct.Struct(">i")
_STILL_RUNNING = -(2 ** 31)       # an exit "code" no process has


class ZygoteGone(FogmeshError, OSError):
    """The zygote is not there any more (killed, or out of processes)."""


def usable() -> bool:
    """Forking is safe only while this process has a single thread, and the
    platform must pass file descriptors over sockets."""
    return (hasattr(os, "fork") and hasattr(socket, "send_fds")
            and threading.active_count() == 1)


class ForkedWorker:
    """What the pool holds for a worker the zygote forked: the part of
    :class:`multiprocessing.Process` it uses. Without its zygote (killed) a
    worker counts as exited; a kill then goes to the pid directly."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote, self.pid = zygote, pid
        self._code: int | None = None
        self._orphan = False

    @property
    def exitcode(self) -> int | None:
        if self._code is None and not self._orphan:
            try:
                self._code = self._zygote.poll(self.pid)
            except ZygoteGone:
                self._orphan = True
        return self._code

    def is_alive(self) -> bool:
        return self.exitcode is None and not self._orphan

    def kill(self) -> None:
        if self.exitcode is not None:
            return
        if self._orphan:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        try:
            self._zygote.kill(self.pid)
        except ZygoteGone:
            self._orphan = True
            self.kill()

    def join(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)


class Zygote:
    """Start with :meth:`start` while the process has one thread (see
    :func:`usable`); ``main`` runs in every worker it forks."""

    def __init__(self, main: WorkerMain) -> None:
        self._main = main
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.pid: int | None = None

    def start(self) -> None:
        # Objects that exist now are shared with the zygote and its workers:
        # out of the collector's reach, whose passes would write to every
        # one of them and so copy the pages they share.
        gc.freeze()
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:                      # the zygote
            status = 1
            try:
                ours.close()
                _serve(theirs, self._main)
                status = 0
            finally:
                os._exit(status)
        theirs.close()
        self._sock, self.pid = ours, pid

    def launch(self) -> tuple[ForkedWorker, Connection]:
        """A new worker and the agent's end of its pipe."""
        with self._lock:
            sock = self._need()
            try:
                sock.sendall(_REQUEST.pack(b"S", 0))
                data, fds, _flags, _addr = socket.recv_fds(sock, _PID.size, 1)
                while fds and len(data) < _PID.size:
                    data += _recv_exact(sock, _PID.size - len(data))
            except OSError as exc:
                raise ZygoteGone(f"the zygote (pid {self.pid}) is gone: {exc}") from exc
            if not fds or len(data) != _PID.size:
                raise ZygoteGone(f"the zygote (pid {self.pid}) is gone or could not fork")
            return ForkedWorker(self, _PID.unpack(data)[0]), Connection(fds[0])

    def kill(self, pid: int) -> None:
        self._ask(b"K", pid)

    def poll(self, pid: int) -> int | None:
        """The worker's exit code (negative: the signal), None while it runs."""
        code = self._ask(b"W", pid)
        return None if code == _STILL_RUNNING else code

    def stop(self) -> None:
        """The zygote kills the workers it still has and leaves."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None

    def _ask(self, op: bytes, pid: int) -> int:
        with self._lock:
            sock = self._need()
            try:
                sock.sendall(_REQUEST.pack(op, pid))
                code: int = _PID.unpack(_recv_exact(sock, _PID.size))[0]
                return code
            except OSError as exc:
                raise ZygoteGone(f"the zygote (pid {self.pid}) is gone: {exc}") from exc

    def _need(self) -> socket.socket:
        if self._sock is None:
            raise ZygoteGone("the zygote is stopped")
        return self._sock


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("closed")
        data += chunk
    return data


def _serve(sock: socket.socket, main: WorkerMain) -> None:
    """The zygote's loop. Everything the agent had at the fork stays as it
    was: out of the garbage collector's reach (``Zygote.start`` froze it
    before the fork: a collected copy of an agent object could close a
    descriptor that is something else here), and every descriptor but this
    socket and stdio closed (the journal, the state directory's lock)."""
    # Ctrl-C and a SIGTERM to the whole process group (a terminal, `kill -- -PGID`,
    # tini -g) are the agent's to handle: it finishes the tasks under way, then
    # stops its workers. Killed by the signal, they failed those tasks
    # (worker_lost) and the agent started new ones as it stopped. The zygote
    # leaves when the agent's socket closes, whatever killed the agent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, max(os.sysconf("SC_OPEN_MAX"), 1 << 16))
    children: set[int] = set()
    exited: dict[int, int] = {}        # reaped, exit code not asked for yet
    try:
        while True:
            op, pid = _REQUEST.unpack(_recv_exact(sock, _REQUEST.size))
            _reap_exited(children, exited)     # no zombies pile up, however many kills
            if op == b"S":
                child = _fork_worker(sock, main)
                if child is None:
                    sock.sendall(_PID.pack(0))         # no descriptor: launch() raises
                    continue
                children.add(child[0])
                socket.send_fds(sock, [_PID.pack(child[0])], [child[1].fileno()])
                child[1].close()
            elif op == b"K":
                if pid in children:
                    _kill(pid)
                sock.sendall(_PID.pack(0))
            elif op == b"W":
                code = exited.pop(pid, _STILL_RUNNING if pid in children else -signal.SIGKILL)
                sock.sendall(_PID.pack(code))
    except OSError:
        pass                                           # the agent is gone (or stopped us)
    for pid in children:
        _kill(pid)
    for pid in children:
        _reap(pid)


def _reap_exited(children: set[int], exited: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        exited[pid] = os.waitstatus_to_exitcode(status)
        if len(exited) > 1000:                         # codes nobody asked for
            del exited[next(iter(exited))]


def _fork_worker(sock: socket.socket, main: WorkerMain) -> tuple[int, socket.socket] | None:
    try:
        parent_end, worker_end = socket.socketpair()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:                          # the worker
        status = 1
        try:
            # SIGTERM stays the agent's (see _serve), through a handler that does
            # nothing rather than SIG_IGN, which a process a task starts would inherit.
            signal.signal(signal.SIGTERM, _agents_to_handle)
            sock.close()
            parent_end.close()
            main(Connection(worker_end.detach()))
            status = 0
        finally:
            os._exit(status)
    worker_end.close()
    return pid, parent_end


def _agents_to_handle(_signum: int, _frame: object) -> None:
    """A worker's SIGTERM: nothing; the agent stops its workers itself."""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
