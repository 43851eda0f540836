"""The bridge's store-and-forward outbox: SQLite in WAL mode, bounded.

Why SQLite: one file, crash-safe commits, ordered replay by an integer key, and
it ships with Python. A task is committed here *before* the bridge accepts it
from the fog, so a bridge killed at any point loses nothing it acknowledged.
Rows move queued -> sent (the cloud broker PUBACKed it) -> answered (its result
is on its way to the fog) -> deleted (the edge broker acknowledged the result,
and only then is the cloud's copy of the result acknowledged). Bounded by rows
and by payload bytes, and by the free space on its disk (it leaves
``reserve_bytes`` free, whatever the byte bound says), so an outage fills a
known amount of disk, never the whole card; when full, the bridge refuses new
work and the fog runs it instead. SQLite's errors (a full disk, a read-only
file) become :class:`~fogmesh.errors.StorageError` here.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fogmesh.errors import DiskLow, StorageError, StoreFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL UNIQUE,
    origin   TEXT NOT NULL,
    offer    TEXT NOT NULL,
    payload  BLOB NOT NULL,
    created  REAL NOT NULL,
    deadline REAL,
    state    TEXT NOT NULL DEFAULT 'queued',
    sent_at  REAL
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, seq);
"""


@dataclass(frozen=True)
class Row:
    seq: int
    task_id: str
    origin: str
    offer: str
    payload: bytes
    created: float
    deadline: float | None
    state: str


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def default_reserve(directory: Path) -> int:
    """Space the outbox leaves free on its disk: 10% of the filesystem, at most 64 MiB."""
    st = os.statvfs(directory)
    return min(64 * 1024 * 1024, st.f_blocks * st.f_frsize // 10)


class Outbox:
    def __init__(self, path: str | Path, *, max_rows: int = 100_000, max_bytes: int = 256 * 1024 * 1024,
                 reserve_bytes: int | None = None,
                 free_space: Callable[[Path], int] = free_bytes) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._free_space = free_space
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.reserve_bytes = default_reserve(self.path.parent) if reserve_bytes is None else reserve_bytes
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: durable across a process crash
            self.db.executescript(SCHEMA)
            self._rows, self._bytes = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the outbox {self.path}: {exc}. Make {self.path.parent} "
                               "writable, or pick another file with --store") from None

    def _run(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(f"outbox {self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        return self._bytes

    def add(self, *, task_id: str, origin: str, offer: str, payload: bytes, created: float,
            deadline: float | None) -> bool:
        """Commit a task; False if it is already here (a repeated offer).
        :class:`StoreFull` at a bound, :class:`StorageError` if the disk refuses."""
        if self._rows >= self.max_rows or self._bytes + len(payload) > self.max_bytes:
            raise StoreFull(f"outbox holds {self._rows} tasks / {self._bytes} bytes "
                            f"(limits {self.max_rows} / {self.max_bytes})")
        try:
            free = self._free_space(self.path.parent)
        except OSError:
            free = None
        if free is not None and free - 4 * len(payload) < self.reserve_bytes:   # row, index, WAL copies
            raise DiskLow(f"the outbox's disk has {free} bytes free, at its reserve of "
                          f"{self.reserve_bytes} ({self.path.parent})")
        try:
            self._run("INSERT INTO outbox(task_id, origin, offer, payload, created, deadline) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (task_id, origin, offer, payload, created, deadline))
        except sqlite3.IntegrityError:
            return False
        self._rows += 1
        self._bytes += len(payload)
        return True

    def queued(self, limit: int = 500) -> list[Row]:
        """The oldest tasks not yet acknowledged by the cloud, in arrival order."""
        cur = self._run("SELECT seq, task_id, origin, offer, payload, created, deadline, state "
                        "FROM outbox WHERE state = 'queued' ORDER BY seq LIMIT ?", (limit,))
        return [Row(*r) for r in cur.fetchall()]

    def get(self, task_id: str) -> Row | None:
        r = self._run("SELECT seq, task_id, origin, offer, payload, created, deadline, state "
                      "FROM outbox WHERE task_id = ?", (task_id,)).fetchone()
        return Row(*r) if r else None

    def mark_sent(self, task_ids: list[str], now: float) -> None:
        if task_ids:
            try:
                self.db.executemany("UPDATE outbox SET state = 'sent', sent_at = ? WHERE task_id = ?",
                                    [(now, t) for t in task_ids])
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self.path}: {exc}") from None

    def mark_answered(self, task_id: str) -> None:
        self._run("UPDATE outbox SET state = 'answered' WHERE task_id = ?", (task_id,))

    def requeue_stale(self, before: float) -> int:
        """Tasks the cloud acknowledged before ``before`` and never answered go
        out again: the broker may have had no subscribed worker, or lost them
        in a restart. The bridge and the origin drop duplicate results."""
        cur = self._run("UPDATE outbox SET state = 'queued' WHERE state = 'sent' AND sent_at < ?", (before,))
        return cur.rowcount

    def remove(self, task_id: str) -> Row | None:
        row = self.get(task_id)
        if row is not None:
            self._run("DELETE FROM outbox WHERE task_id = ?", (task_id,))
            self._rows -= 1
            self._bytes -= len(row.payload)
        return row

    def oldest_created(self) -> float | None:
        r = self._run("SELECT MIN(created) FROM outbox").fetchone()
        return r[0] if r else None

    def queued_count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM outbox WHERE state = 'queued'").fetchone()[0])
