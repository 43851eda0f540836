"""A lock-order checker for the suite: which locks a thread held when it
waited for another, and whether two threads ever took locks in orders that
can deadlock.

The locks of real objects (an :class:`~fogmesh.mqtt.MqttClient`, its paho
client, a device's client) are replaced on the instances, before their
threads start, by wrappers that record, per thread, what it holds. Each
blocking acquisition of B while holding A is an edge A -> B of a graph; a
cycle in it whose edges were made by as many different threads as it has
edges is a potential deadlock (each thread holds one lock of the cycle and
waits for the next), reported with the stack of each edge's first sighting.
It need not have happened: the orders are enough.

What cannot deadlock is not an edge: an acquisition that does not block
(``acquire(False)``, or with a timeout), a reentrant lock taken again by its
owner, and a cycle one thread made alone (a thread waits for one lock at a
time). A non-reentrant lock its owner waits for again is reported too.
"""

from __future__ import annotations

import itertools
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


@dataclass
class Sighting:
    """The first time one thread waited for ``wanted`` holding ``held``."""

    thread: str
    stack: list[str]
    count: int = 1


@dataclass
class Cycle:
    """Locks in a cycle (the first again at the end) and, per edge, the
    sighting of the thread chosen for it."""

    locks: list[str]
    edges: list[tuple[str, str, Sighting]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = ["potential deadlock: " + " -> ".join(self.locks)]
        for held, wanted, seen in self.edges:
            lines.append(f"  thread {seen.thread!r} held {held} while waiting for {wanted}:")
            lines.extend("    " + line for frame in seen.stack for line in frame.rstrip().splitlines())
        return "\n".join(lines)


class Tracked:
    """A lock (or reentrant lock) that tells its :class:`LockOrder` who takes it."""

    __slots__ = ("_lock", "_order", "node", "name", "reentrant", "acquired", "reentered")

    def __init__(self, lock: Any, order: LockOrder, node: int, name: str) -> None:
        self._lock, self._order, self.node, self.name = lock, order, node, name
        self.reentrant = isinstance(lock, _RLOCK)
        self.acquired = 0          # times taken (not counting reentries)
        self.reentered = 0         # times its owner took it again (reentrant locks)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        held = self._order._held()
        mine = next((h for h in held if h[0] is self), None)
        if mine is not None and self.reentrant:
            got = self._lock.acquire(blocking, timeout)
            if got:
                mine[1] += 1
                self.reentered += 1
            return got
        if blocking and timeout < 0:
            self._order._waits(held, self, again=mine is not None)
        got = self._lock.acquire(blocking, timeout)
        if got:
            held.append([self, 1])
            self.acquired += 1
        return got

    def release(self) -> None:
        held = self._order._held()
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] is self:
                held[i][1] -= 1
                if held[i][1] == 0:
                    del held[i]
                break
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lock, name)

    def __repr__(self) -> str:
        return f"<Tracked {self.name}>"


class LockOrder:
    def __init__(self) -> None:
        self._guard = threading.Lock()          # the checker's own (never tracked)
        self._local = threading.local()
        self._serials = itertools.count(1)
        self._nodes = itertools.count(1)
        self.locks: dict[str, Tracked] = {}
        # (held node, wanted node) -> thread serial -> its first sighting
        self._edges: dict[tuple[int, int], dict[int, Sighting]] = {}
        self._names: dict[int, str] = {}
        self.self_waits: list[Sighting] = []    # a non-reentrant lock waited for by its owner

    # -- instrumenting ---------------------------------------------------------------
    def track(self, lock: Any, name: str) -> Tracked:
        if name in self.locks:
            raise ValueError(f"a lock named {name!r} is tracked already")
        node = next(self._nodes)
        tracked = Tracked(lock, self, node, name)
        self.locks[name] = tracked
        self._names[node] = name
        return tracked

    def instrument(self, obj: Any, name: str, *, must_find: bool = True) -> list[str]:
        """Replace every lock ``obj`` holds in an attribute by a tracked one
        (named ``name.attribute``); returns those names. Call it before any
        thread uses them."""
        found = []
        for attr, value in list(vars(obj).items()):
            if isinstance(value, (_LOCK, _RLOCK)):
                setattr(obj, attr, self.track(value, f"{name}.{attr}"))
                found.append(f"{name}.{attr}")
        if not found and must_find:
            raise AssertionError(f"{name}: no lock to track in {type(obj).__name__}")
        return found

    def instrument_client(self, client: Any, name: str) -> list[str]:
        """An :class:`~fogmesh.mqtt.MqttClient` (not started yet): its own
        locks (none today), its subscription book's (``name.subscriptions.*``)
        and its paho client's (``name.paho.*``)."""
        return (self.instrument(client, name, must_find=False)
                + self.instrument(client._subscriptions, f"{name}.subscriptions")
                + self.instrument(client._paho, f"{name}.paho"))

    # -- recording (called by the wrappers) ----------------------------------------------
    def _held(self) -> list[list[Any]]:
        local = self._local
        try:
            return local.held
        except AttributeError:
            local.held = []
            local.serial = next(self._serials)
            return local.held

    def _waits(self, held: list[list[Any]], wanted: Tracked, *, again: bool) -> None:
        if again:
            with self._guard:
                self.self_waits.append(Sighting(f"{threading.current_thread().name} on {wanted.name}", _stack()))
            return
        serial = self._local.serial
        for lock, _ in held:
            key = (lock.node, wanted.node)
            seen = self._edges.get(key)
            if seen is not None and serial in seen:
                seen[serial].count += 1
                continue
            with self._guard:
                self._edges.setdefault(key, {})[serial] = Sighting(threading.current_thread().name, _stack())

    # -- reading ---------------------------------------------------------------------
    def edges(self) -> set[tuple[str, str]]:
        """Every "A held while waiting for B" seen, by name."""
        with self._guard:
            return {(self._names[a], self._names[b]) for a, b in self._edges}

    def cycles(self, *, longest: int = 6) -> list[Cycle]:
        """The potential deadlocks: cycles (up to ``longest`` locks) whose
        edges can each be given a thread of its own."""
        with self._guard:
            edges = {k: dict(v) for k, v in self._edges.items()}
        after: dict[int, list[int]] = {}
        for a, b in edges:
            after.setdefault(a, []).append(b)
        found = []
        for path in _simple_cycles(after, longest):
            pairs = list(zip(path, path[1:] + path[:1]))
            threads = _distinct_threads([edges[p] for p in pairs])
            if threads is None:
                continue
            cycle = Cycle([self._names[n] for n in [*path, path[0]]])
            for (a, b), serial in zip(pairs, threads):
                cycle.edges.append((self._names[a], self._names[b], edges[(a, b)][serial]))
            found.append(cycle)
        return found

    def report(self) -> str:
        parts = [str(c) for c in self.cycles()]
        parts += [f"a thread waits for a lock it holds: {s.thread}\n" + "".join(s.stack) for s in self.self_waits]
        return "\n\n".join(parts)

    def assert_no_deadlock(self) -> None:
        report = self.report()
        assert not report, report


def _stack() -> list[str]:
    """The caller's stack, without the checker's frames and threading's start-up."""
    frames = [f for f in traceback.extract_stack()
              if f.filename != __file__ and not (f.filename == threading.__file__ and f.name.startswith("_bootstrap"))]
    return traceback.format_list(frames)


def _simple_cycles(after: dict[int, list[int]], longest: int) -> list[list[int]]:
    """Each elementary cycle once, as the path from its smallest node."""
    cycles = []
    for start in sorted(after):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in after.get(node, ()):
                if nxt == start:
                    cycles.append(path)
                elif nxt > start and nxt not in path and len(path) < longest:
                    stack.append((nxt, [*path, nxt]))
    return cycles


def _distinct_threads(per_edge: list[dict[int, Sighting]]) -> list[int] | None:
    """One thread per edge, all different (None if there is no such choice)."""
    def pick(i: int, used: tuple[int, ...]) -> list[int] | None:
        if i == len(per_edge):
            return []
        for serial in per_edge[i]:
            if serial not in used:
                rest = pick(i + 1, (*used, serial))
                if rest is not None:
                    return [serial, *rest]
        return None
    return pick(0, ())
