"""The tasks' way up: the outbox sent to the cloud broker in order, at most
``limit`` unconfirmed at a time, and only while the uplink is up and a cloud
worker is online (no worker: they wait in the outbox, not in the broker's
queue); what the cloud broker confirmed is marked sent; a task sent but not
answered within ``resend_after_s`` goes again (the cloud may have lost it)."""

from __future__ import annotations

from typing import Callable

from fogmesh.cloud_bridge.bookkeeping import Bookkeeping
from fogmesh.cloud_bridge.store import Outbox
from fogmesh.errors import StorageError
from fogmesh.mqtt import Delivery

MAX_WORKERS = 1000        # cloud workers it counts online (their presence topics name them)
LIMIT = 1000              # tasks sent and not yet confirmed by the cloud broker, at most
RESEND_EVERY_S = 1.0      # how often the outbox is searched for sent tasks left unanswered


class Uplink:
    def __init__(self, outbox: Outbox, books: Bookkeeping, *, send: Callable[[bytes], Delivery | None],
                 counters: dict[str, int], resend_after_s: float) -> None:
        self.outbox, self.books, self._publish, self.counters = outbox, books, send, counters
        self.resend_after_s = resend_after_s
        self.up = False                                    # the cloud broker connected
        self.workers: set[str] = set()                     # cloud workers online
        self.inflight: dict[str, Delivery] = {}            # key -> sent, not yet confirmed by the cloud broker
        self.backlogged = outbox.queued_count() > 0        # unsent tasks wait in the outbox
        self._resend_at = -1e9

    @property
    def ready(self) -> bool:
        """Whether a task sent now has a worker to run it."""
        return self.up and bool(self.workers)

    def changed(self, up: bool) -> None:
        """The uplink came up (what was sent unconfirmed goes again, in order) or went down."""
        self.up = up
        if up:
            self.inflight.clear()              # unacknowledged sends are replayed below
            self.backlogged = True
            self.replay()
        else:
            self.workers.clear()

    def worker(self, worker: str, *, online: bool) -> None:
        """A cloud worker's presence (named by its topic)."""
        if online and worker not in self.workers and len(self.workers) < MAX_WORKERS:
            self.workers.add(worker)
            self.replay()
        elif not online:
            self.workers.discard(worker)

    def take(self, key: str, payload: bytes) -> None:
        """A task just committed to the outbox: sent at once when nothing waits before it."""
        if self.ready and len(self.inflight) < LIMIT and not self.backlogged:
            self.send(key, payload)
        else:
            self.backlogged = True

    def answered(self, key: str) -> None:
        self.inflight.pop(key, None)

    def replay(self, limit: int = LIMIT) -> None:
        """Send queued tasks in order; the rest follow as PUBACKs come back.
        Reads the outbox only while some task in it has not been sent."""
        budget = limit - len(self.inflight)
        if not self.backlogged or budget < limit // 2 or not self.ready:
            return
        try:
            rows = self.outbox.queued(limit=budget + len(self.inflight) + len(self.books.unmarked))
        except StorageError as exc:
            self.books.failed(exc)
            return
        sent_all = True
        for row in rows:
            if row.task_id in self.inflight or row.task_id in self.books.unmarked:
                continue
            if budget <= 0:
                sent_all = False
                break
            self.send(row.task_id, row.payload)
            budget -= 1
        if sent_all and len(rows) < limit:
            self.backlogged = False

    def send(self, key: str, payload: bytes) -> None:
        delivery = self._publish(payload)
        assert delivery is not None          # untagged publishes are never withdrawn
        self.inflight[key] = delivery
        self.counters["forwarded"] += 1

    def confirmed(self, now: float) -> None:
        """What the cloud broker has acknowledged is marked sent; more follow."""
        acked = [k for k, delivery in self.inflight.items() if delivery.confirmed()]
        if acked:
            for k in acked:
                del self.inflight[k]
            self.books.sent(acked, now)
            self.replay()

    def resend_stale(self, now: float) -> None:
        """Sent tasks left unanswered too long are queued again (once a second at most)."""
        if not self.ready or now - self._resend_at < RESEND_EVERY_S:
            return
        self._resend_at = now
        try:
            stale = self.outbox.requeue_stale(now - self.resend_after_s)
        except StorageError as exc:
            self.books.failed(exc)
            stale = 0
        if stale:
            self.backlogged = True
            self.replay()
