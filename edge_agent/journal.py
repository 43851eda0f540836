"""The agent's journal: tasks it accepted and has not answered yet, on disk.

Why: a broker is not a reliable memory of what an agent was doing when it
died. amqtt forgets QoS 1 messages whose PUBACK never came, and any broker
forgets when its own session store is lost. The journal lets a restarted agent
(same id, same root, same machine) finish what it had accepted, and remember
which task ids it already answered, so a broker's redelivery of an answered
task is not answered twice.

Format: append-only records, ``A`` (accepted: key, raw task payload), ``R``
(answered: key, wall-clock time as a big-endian double, reply topic, reply
bytes) and ``T`` (answered: key, time), each ``tag`` then its fields as
``u32 len + bytes``. The answer is kept so that a device that submits the id
again after a restart gets the same answer; ``T`` (no answer kept) and ``D``
(no time either) come from older versions and are still read. Answered ids are
kept for ``done_ttl_s`` (the dedup window), not for ever: a device may reuse an
id after that, restart or not. One ``os.write`` per record on an ``O_APPEND``
file: a process killed at any point leaves at most a torn last record, which
loading ignores. No fsync: surviving a process crash is the goal; a power cut
is the broker's and the device's retry's job. The file is rewritten (compacted) at start and whenever it passes
``max_bytes``, so it stays bounded by what the agent holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.errors import JournalLocked, StorageError

__all__ = ["Journal", "JournalLocked", "StorageError", "default_state_dir"]

_LEN = struct.Struct(">I")
_TIME = struct.Struct(">d")


def default_state_dir() -> Path:
    env = os.environ.get("FOGMESH_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "fogmesh"


def _record(tag: bytes, *parts: bytes) -> bytes:
    return tag + b"".join(_LEN.pack(len(p)) + p for p in parts)


class Journal:
    def __init__(self, path: str | Path, *, keep_done: int = 20_000, max_bytes: int = 16 * 1024 * 1024,
                 done_ttl_s: float = 900.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.keep_done = keep_done
        self.max_bytes = max_bytes
        self.done_ttl_s = done_ttl_s
        self.wall_clock = wall_clock
        self.unfinished: OrderedDict[str, bytes] = OrderedDict()
        self.done: OrderedDict[str, float] = OrderedDict()     # answered id -> when (wall clock)
        self.answers: dict[str, StoredAnswer] = {}             # ... and its answer, when kept
        self._fd = -1
        self._lock_fd = -1
        self._size = 0
        self.failed: str | None = None      # why the last write failed; None while it works

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> Journal:
        """Lock, load and compact. Returns self; see ``unfinished`` and ``done``.
        Raises :class:`StorageError` (naming the directory) when it cannot."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot use the state directory {self.path.parent}: {exc.strerror or exc}. Make it "
                "writable, or point $FOGMESH_STATE_DIR at a writable directory") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalLocked(f"another agent with this id and root is running on this machine "
                                f"(journal {self.path} is locked); give each agent its own --id") from None
        if self.path.exists():
            self._load(self.path.read_bytes())
        now = self.wall_clock()
        for key, at in list(self.done.items()):
            if now - at > self.done_ttl_s:
                del self.done[key]
                self.answers.pop(key, None)
        try:
            self._compact()
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot write the journal {self.path}: {exc.strerror or exc}. Free space "
                               f"in {self.path.parent} or make it writable") from None
        return self

    def retry(self) -> bool:
        """After a failed write: rewrite the whole journal from memory (the
        failed write may have left a torn record). True once it works again."""
        if self.failed is None:
            return True
        try:
            self._compact()
        except OSError:
            return False
        self.failed = None
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- records ---------------------------------------------------------------
    def accepted(self, key: str, payload: bytes) -> None:
        self.unfinished[key] = payload
        self._append(_record(b"A", key.encode(), payload))

    def finished(self, key: str, answer: StoredAnswer | None = None) -> None:
        if self.unfinished.pop(key, None) is None:
            return
        now = self.wall_clock()
        self._remember_done(key, now, answer)
        self._append(self._done_record(key, now))

    def _done_record(self, key: str, at: float) -> bytes:
        answer = self.answers.get(key)
        if answer is None:
            return _record(b"T", key.encode(), _TIME.pack(at))
        return _record(b"R", key.encode(), _TIME.pack(at), answer.topic.encode(), answer.payload)

    def _remember_done(self, key: str, at: float, answer: StoredAnswer | None = None) -> None:
        self.done[key] = at
        self.done.move_to_end(key)
        if answer is not None:
            self.answers[key] = answer
        while len(self.done) > self.keep_done:
            old, _ = self.done.popitem(last=False)
            self.answers.pop(old, None)

    def _append(self, data: bytes) -> None:
        """Raises :class:`StorageError` when the write fails (disk full...);
        after that, memory stays current and nothing is written until
        :meth:`retry` succeeds."""
        if self.failed is not None:
            return
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
            self._size += len(data)
            if self._size > self.max_bytes:
                self._compact()
        except OSError as exc:
            self.failed = f"cannot write the journal {self.path}: {exc.strerror or exc}"
            raise StorageError(self.failed) from exc

    # -- load / compact --------------------------------------------------------
    def _load(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            tag = data[pos:pos + 1]
            parts = {b"A": 2, b"T": 2, b"R": 4, b"D": 1}.get(tag, 0)
            if parts == 0:
                break                      # unknown tag: stop at the damage
            pos += 1
            fields = []
            for _ in range(parts):
                if pos + 4 > n:
                    return                 # torn last record
                (length,) = _LEN.unpack_from(data, pos)
                pos += 4
                if pos + length > n:
                    return
                fields.append(data[pos:pos + length])
                pos += length
            key = fields[0].decode(errors="replace")
            if tag == b"A":
                self.unfinished[key] = fields[1]
            else:            # an old D record has no time: count it from now
                self.unfinished.pop(key, None)
                ok = tag in (b"T", b"R") and len(fields[1]) == _TIME.size
                answer = StoredAnswer(fields[2].decode(errors="replace"), fields[3]) if tag == b"R" else None
                self._remember_done(key, _TIME.unpack(fields[1])[0] if ok else self.wall_clock(), answer)

    def _compact(self) -> None:
        """Written record by record through a buffer, never as one body in
        memory: a journal of 20,000 answers would have cost its size twice
        over, at every compaction, in an agent under load."""
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        size = 0
        try:
            with open(tmp, "wb", buffering=1 << 16) as f:
                for k, at in self.done.items():
                    size += f.write(self._done_record(k, at))
                for k, payload in self.unfinished.items():
                    size += f.write(_record(b"A", k.encode(), payload))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = size
