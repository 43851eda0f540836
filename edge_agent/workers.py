"""Worker processes that run task handlers off the MQTT thread.

Why processes, not threads: a CPU-bound handler in a thread holds the GIL and
starves paho's network thread (keepalives, acks); a hung handler in a thread
can never be stopped. A process can be killed when its task times out and is
replaced, so one bad handler costs one task, not the agent.

Each worker owns one pipe; the pool hands a task only to an idle worker (the
agent core never starts more runs than the pool has workers). Workers come
from a zygote (:mod:`.zygote`: a copy of the agent forked before its first
thread, so workers share its pages) when the pool starts in a process with
one thread, as ``fogmesh agent`` does; otherwise (an agent inside a program
that already runs threads, such as the tests or ``fogmesh up``) from
multiprocessing's fork server, or spawned.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Mapping

from fogmesh.edge_agent import zygote
from fogmesh.messages import ErrorInfo
from fogmesh.registry import BadArgs, Registry

log = logging.getLogger(__name__)

#: (task_id, result, error, run_ms) -> None; called on a pool thread.
DoneCallback = Callable[[str, Any, "ErrorInfo | None", float], None]


def run_handler(registry: Registry, kind: str, args: Mapping[str, Any], *, shipped: Any = None,
                cache: dict[Any, Any] | None = None) -> tuple[Any, ErrorInfo | None]:
    """Run one handler and map its failure to a wire error. Shared by inline
    runs and worker processes so both answer the same way. ``shipped``: a
    deployed kind's loader, sent with the job (``TaskKind.ships_handler``);
    ``cache``: where it keeps what it loaded in this worker."""
    try:
        if shipped is not None:
            return shipped(args, cache), None
        return registry.get(kind).handler(args), None
    except BadArgs as exc:
        return None, ErrorInfo("bad_args", str(exc))
    except Exception as exc:
        return None, ErrorInfo("handler_error", f"{type(exc).__name__}: {exc}")


def _worker_main(conn: Connection, registry: Registry) -> None:
    """Entry point of a worker process: receive (id, kind, args), send results."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    loaded: dict[Any, Any] = {}     # deployed kinds this worker has loaded
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if job is None:     # the pool is stopping
            return
        task_id, kind, args, shipped = job
        t0 = time.perf_counter()
        result, error = run_handler(registry, kind, args, shipped=shipped, cache=loaded)
        run_ms = 1000 * (time.perf_counter() - t0)
        try:
            conn.send((task_id, result, error, run_ms))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send((task_id, None, ErrorInfo("bad_result", f"result cannot be sent back: {exc}"),
                       run_ms))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    task_id: str | None = None
    reader: threading.Thread | None = None
    dead: bool = False
    retired: bool = False     # replace once idle (it may hold an older version of a deployed kind)


def _context() -> Any:
    """Workers are forked from a fork server where the platform has one: it
    starts once per agent process with fogmesh's modules imported, so each
    worker (also each replacement after a timeout) starts in milliseconds and
    shares those pages instead of importing everything again. It has no
    threads, so forking it is safe (unlike forking the agent, which runs
    paho's). Elsewhere: spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["fogmesh.edge_agent.workers", "fogmesh.builtin_kinds"])
        return ctx
    return mp.get_context("spawn")


class WorkerPool:
    def __init__(self, size: int, registry: Registry, on_done: DoneCallback, *, name: str = "agent") -> None:
        self.size = size
        self.registry = registry
        self.on_done = on_done
        self.name = name
        self._ctx = _context()
        self._zygote: zygote.Zygote | None = None
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._pending: deque[tuple[str, str, dict[str, Any], Any]] = deque()
        self._closing = False

    def start(self) -> None:
        if self.size and zygote.usable():
            registry = self.registry
            self._zygote = zygote.Zygote(lambda conn: _worker_main(conn, registry))
            self._zygote.start()
        with self._lock:
            self._workers = [self._spawn() for _ in range(self.size)]

    def _launch(self) -> tuple[Any, Connection]:
        if self._zygote is not None:
            try:
                return self._zygote.launch()
            except zygote.ZygoteGone as exc:
                log.warning("%s: %s; workers are started by multiprocessing from now on", self.name, exc)
                self._zygote = None
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.registry),
                                 name=f"fogmesh-worker-{self.name}", daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def _spawn(self) -> _Worker:
        proc, parent = self._launch()
        worker = _Worker(proc=proc, conn=parent)
        worker.reader = threading.Thread(target=self._read, args=(worker,), daemon=True,
                                         name=f"worker-reader-{proc.pid}")
        worker.reader.start()
        return worker

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                task_id, result, error, run_ms = worker.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                worker.task_id = None
                retire = worker.retired
            self.on_done(task_id, result, error, run_ms)
            if retire:
                self._replace_retired(worker)
            self._dispatch_pending()
        # The worker is gone: killed on purpose by cancel(), or it crashed.
        with self._lock:
            lost = worker.task_id
            worker.task_id = None
            replace = not self._closing and worker in self._workers
            if replace:
                self._workers.remove(worker)
        if not replace:
            worker.proc.join(2.0)     # retired or stopping: reap it
        if replace:
            code = worker.proc.exitcode
            log.warning("%s: worker pid %s exited (code %s); starting a new one",
                        self.name, worker.proc.pid, code)
            new = self._spawn()
            with self._lock:
                self._workers.append(new)
            if lost is not None:
                self.on_done(lost, None, ErrorInfo("worker_lost",
                                                   f"the worker process died (exit code {code})"), 0.0)
            self._dispatch_pending()

    def _dispatch_pending(self) -> None:
        while True:
            with self._lock:
                idle = next((w for w in self._workers if w.task_id is None and not w.dead and not w.retired), None)
                if idle is None or not self._pending:
                    return
                job = self._pending.popleft()
                idle.task_id = job[0]
            try:
                idle.conn.send(job)
            except (BrokenPipeError, OSError):
                with self._lock:   # it died meanwhile: its reader will replace it
                    idle.dead = True
                    idle.task_id = None
                    self._pending.appendleft(job)

    def submit(self, task_id: str, kind: str, args: Mapping[str, Any], *, shipped: Any = None) -> None:
        """Run on an idle worker, or as soon as one is idle (a killed worker
        is being replaced). ``shipped``: a deployed kind's handler."""
        with self._lock:
            self._pending.append((task_id, kind, dict(args), shipped))
        self._dispatch_pending()

    def renew(self) -> None:
        """Replace every worker, each once it is idle: after a deployed kind
        changed version, no worker that imported the old one runs the new
        (a module stays imported for a process's life). Runs under way
        finish where they are (that kind's drain)."""
        with self._lock:
            if self._closing:
                return
            for w in self._workers:
                w.retired = True
            idle = [w for w in self._workers if w.task_id is None]
        for w in idle:
            self._replace_retired(w)
        self._dispatch_pending()

    def _replace_retired(self, worker: _Worker) -> None:
        with self._lock:
            if self._closing or worker not in self._workers or worker.task_id is not None:
                return
            self._workers.remove(worker)
        try:
            worker.conn.send(None)          # leave: its reader sees the pipe close and does not replace it
        except OSError:
            pass
        new = self._spawn()
        with self._lock:
            self._workers.append(new)

    def cancel(self, task_id: str) -> None:
        """Kill the worker running ``task_id``; its reader thread replaces it."""
        with self._lock:
            self._pending = deque(j for j in self._pending if j[0] != task_id)
            worker = next((w for w in self._workers if w.task_id == task_id), None)
            if worker is not None:
                worker.task_id = None  # the run is already answered (timeout)
                worker.dead = True     # never hand it another task
        if worker is not None:
            worker.proc.kill()

    def stop(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        for w in workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in workers:
            w.proc.join(1.0)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1.0)
            try:
                w.conn.close()
            except OSError:
                pass
        if self._zygote is not None:
            self._zygote.stop()
