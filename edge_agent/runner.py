"""This agent's own work: the queue of tasks waiting for a worker, how many
run in workers now, and how long each kind took. Pure: keys, counts and
milliseconds in; the core decides what to run, this says whether it may.

Why one owner: the running count used to be decremented in four places
across three files (a finished run, a timeout, a run stopped because a peer's
answer came first, ...); one missed or doubled decrement starves the agent or
runs more tasks than it has workers. Here it moves only through
:meth:`LocalRunner.started` and :meth:`LocalRunner.stopped`, and cannot go
below zero. Inline kinds run within the step that starts them and are not
counted.
"""

from __future__ import annotations

from collections import deque

from fogmesh.errors import IllegalTransition


class LocalRunner:
    def __init__(self, *, concurrency: int, max_queue: int, default_run_ms: float) -> None:
        if concurrency < 1 or max_queue < 0:
            raise ValueError("concurrency must be >= 1 and max_queue >= 0")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.default_run_ms = default_run_ms
        self._queue: deque[str] = deque()
        self._running = 0
        self._run_ms: dict[str, float] = {}

    # -- views ---------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        """Runs in workers now (inline runs are not counted)."""
        return self._running

    def is_full(self) -> bool:
        """No room: every worker busy and the queue at ``max_queue``."""
        return len(self._queue) + self._running >= self.concurrency + self.max_queue

    def waiting_for_later(self) -> list[str]:
        """Queued keys beyond the next ``concurrency`` (those would wait
        longest), oldest first."""
        return list(self._queue)[self.concurrency:]

    def run_ms(self, kind: str) -> float:
        """How long ``kind`` takes here (an EWMA of successful runs)."""
        return self._run_ms.get(kind, self.default_run_ms)

    # -- changes -------------------------------------------------------------
    def enqueue(self, key: str) -> None:
        self._queue.append(key)

    def dequeue(self, key: str) -> None:
        """Take ``key`` out of the queue (offered elsewhere, answered, dropped)."""
        self._queue.remove(key)

    def next_to_start(self) -> str | None:
        """The oldest queued key if a worker is free (taken out of the queue)."""
        if self._queue and self._running < self.concurrency:
            return self._queue.popleft()
        return None

    def started(self) -> None:
        """A run in a worker started."""
        self._running += 1

    def stopped(self) -> None:
        """A run in a worker ended: finished, timed out or cancelled."""
        if self._running == 0:
            raise IllegalTransition("a run stopped while none was running")
        self._running -= 1

    def observe(self, kind: str, ms: float) -> None:
        """A successful run of ``kind`` took ``ms``."""
        old = self._run_ms.get(kind)
        self._run_ms[kind] = ms if old is None else 0.7 * old + 0.3 * ms
