"""Whose turn it is to step the agent's core: the dispatcher thread, or a task
arriving on an idle agent, stepped on the network thread it arrived on.

Why: a task handed from paho's network thread to the dispatcher waits for a
thread wake-up (~100-140 us on a 2-core VM or a Pi, a tenth of a round trip).
An agent with nothing to do can step the task where it arrived and write the
answer from there, as a hand-written paho responder does in ``on_message``.

The rules that keep the core's one-step-at-a-time, in-order contract:

* ``lock`` is held by whoever steps. The dispatcher holds it for a whole
  loop turn and lets go only while it waits for events; an arrival only
  tries it (paho's callbacks must never block on the dispatcher).
* An arrival steps only if every earlier event from its connection (tasks
  queued, connection changes) has been stepped: the network thread counts
  what it queued, the dispatcher what it stepped; each counter has one
  writer. Events from other threads (workers, the control connection) have
  no order with respect to it.
* The caller also leaves the task to the dispatcher when more bytes wait on
  the socket (a burst): under load the network thread keeps reading and
  merging writes while the dispatcher steps, as before. A flood stepped on
  the network thread made the agent 20-50% slower with more memory.
* An exception in a step on the network thread is the dispatcher's to
  report: it is kept here and raised by :meth:`check` on the dispatcher.
"""

from __future__ import annotations

import threading


class Turns:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = False        # arrivals may step (set by the dispatcher, holding ``lock``)
        self._queued = 0         # task-link events queued by the network thread (its counter)
        self._stepped = 0        # of those, stepped by the dispatcher (its counter)
        self.failed: BaseException | None = None

    # -- the network thread ------------------------------------------------------
    def queued(self) -> None:
        """An event from the task connection goes to the dispatcher's queue."""
        self._queued += 1

    def begin_arrival(self) -> bool:
        """Whether the caller steps its event now (then it holds ``lock``, and
        calls :meth:`end` after the step)."""
        if not self.open or self._queued != self._stepped or self.failed is not None:
            return False
        if not self.lock.acquire(blocking=False):
            return False
        if self.open:            # the dispatcher may have closed it meanwhile
            return True
        self.lock.release()
        return False

    def end(self, failure: BaseException | None = None) -> None:
        if failure is not None:
            self.failed = failure
            self.open = False
        self.lock.release()

    # -- the dispatcher --------------------------------------------------------------
    def stepped(self) -> None:
        """The dispatcher took an event the network thread :meth:`queued`."""
        self._stepped += 1

    def check(self) -> None:
        """Raise what a step on the network thread raised (a bug in the core)."""
        if self.failed is not None:
            raise self.failed
