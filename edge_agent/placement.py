"""Placement policies: where a task runs. Pure and pluggable.

A policy sees the task, this agent's own state and the live peers (from their
presence bids) and answers :class:`Local`, :class:`Offload` (to a peer) or
:class:`Cloud`. The agent core and the simulator call the same policy
objects, so a policy is tested once and trusted everywhere. Policies keep only
explicit state (a round-robin counter, a seeded RNG, the energy policy's
offloading flag): no clocks, no IO, no global randomness.

Rules every policy shares (enforced in :func:`eligible`): never a dead,
draining or offline peer, never one that lacks the kind, never one already
tried for this task; and :func:`place_task` always returns a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, Union, runtime_checkable

from fogmesh.edge_agent.peers import Peer


@dataclass(frozen=True)
class Local:
    pass


@dataclass(frozen=True)
class Offload:
    peer: str


@dataclass(frozen=True)
class Cloud:
    pass


Decision = Union[Local, Offload, Cloud]


@dataclass(frozen=True)
class SelfState:
    agent: str
    queued: int = 0
    running: int = 0
    capacity: int = 1
    battery: float | None = None


@runtime_checkable
class PlacementPolicy(Protocol):
    name: str

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        """Where a medium/heavy task should run. ``peers`` are already eligible."""

    def accepts(self, me: SelfState) -> bool:
        """Would this agent take work offloaded by a peer right now?"""


#: A peer takes offloaded work only while fewer than this many tasks per
#: worker wait in its queue; origins do not offer to a peer that looks full.
OFFER_QUEUE_FACTOR = 2


def peer_is_full(queue: int, capacity: int) -> bool:
    return queue >= OFFER_QUEUE_FACTOR * max(1, capacity)


def eligible(peers: Sequence[Peer], kind: str, exclude: frozenset[str] = frozenset()) -> list[Peer]:
    return [p for p in peers if p.presence.state == "online" and kind in p.presence.kinds
            and p.agent not in exclude and not peer_is_full(p.presence.queue, p.presence.capacity)]


def expected_ms(queued: int, running: int, capacity: int, run_ms: float, transfer_ms: float = 0.0) -> float:
    """Expected completion time of one more task: wait for a slot, run, transfer."""
    capacity = max(1, capacity)
    ahead = max(0, queued + running - capacity + 1)
    return ahead / capacity * run_ms + run_ms + transfer_ms


def stays_local(weight: str) -> bool:
    """Light tasks run where they arrive, whatever the policy: moving one costs
    more than running it (the core does not weigh them)."""
    return weight == "light"


def place_task(policy: PlacementPolicy, *, kind: str, weight: str, me: SelfState,
               peers: Sequence[Peer], run_ms: float, exclude: frozenset[str] = frozenset(),
               cloud: bool = False) -> Decision:
    """The shared frame around a policy: light stays local, heavy goes to the
    cloud when there is one, and whatever the policy says is checked."""
    if stays_local(weight):
        return Local()
    if weight == "heavy" and cloud:
        return Cloud()
    candidates = eligible(peers, kind, exclude)
    decision = policy.place(kind, weight, me, candidates, run_ms=run_ms)
    if isinstance(decision, Offload) and decision.peer not in {p.agent for p in candidates}:
        return Local()
    if isinstance(decision, Cloud) and not cloud:
        return Local()
    return decision


class LocalPolicy:
    """Never offload (the baseline every other policy is compared against)."""

    name = "local"

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        return Local()

    def accepts(self, me: SelfState) -> bool:
        return True


@dataclass
class RoundRobinPolicy:
    name: str = "round-robin"
    counter: int = 0

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        slots: list[str | None] = [None] + [p.agent for p in peers]
        choice = slots[self.counter % len(slots)]
        self.counter += 1
        return Local() if choice is None else Offload(choice)

    def accepts(self, me: SelfState) -> bool:
        return True


@dataclass
class RandomPolicy:
    """Uniform over this agent and the eligible peers, from a seeded generator
    (splitmix64), so a run is reproducible from its seed."""

    seed: int = 0
    name: str = "random"

    def __post_init__(self) -> None:
        self._state = self.seed & 0xFFFFFFFFFFFFFFFF

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        choice = self._next() % (len(peers) + 1)
        return Local() if choice == 0 else Offload(peers[choice - 1].agent)

    def accepts(self, me: SelfState) -> bool:
        return True


@dataclass
class LeastLoadedPolicy:
    """Lowest expected completion time: queue wait + run estimate + transfer.
    Peers' load comes from their presence; transfer from the EWMA of past
    offload round trips (1 ms until measured); failures add a penalty."""

    name: str = "least-loaded"
    default_transfer_ms: float = 1.0

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        best: Decision = Local()
        best_ms = expected_ms(me.queued, me.running, me.capacity, run_ms)
        for p in peers:
            pr = p.presence
            transfer = p.rtt_ms if p.rtt_ms is not None else self.default_transfer_ms
            cost = expected_ms(pr.queue, pr.running, pr.capacity, run_ms, transfer)
            cost *= 1 + 4 * p.failure
            if cost < best_ms:
                best, best_ms = Offload(p.agent), cost
        return best

    def accepts(self, me: SelfState) -> bool:
        return True


@dataclass
class EnergyPolicy:
    """The battery policy of Con-Pi (Algorithm 1): run locally while the own
    battery is above ``low``; at or below it, offload to a peer above
    ``accept`` (first fit in registry order, or best fit: the fullest); take
    the work back once the own battery recovers above ``recover``. A peer below
    ``accept`` never takes offloaded work. Without a battery reading, local."""

    low: float = 50.0
    recover: float = 60.0
    accept: float = 70.0
    fit: str = "first"
    name: str = "energy"
    offloading: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.recover:
            raise ValueError("energy policy: low must be <= recover")
        if self.fit not in ("first", "best"):
            raise ValueError("energy policy: fit must be 'first' or 'best'")

    def update(self, battery: float | None) -> None:
        if battery is None:
            self.offloading = False
        elif self.offloading and battery > self.recover:
            self.offloading = False
        elif not self.offloading and battery <= self.low:
            self.offloading = True

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        self.update(me.battery)
        if not self.offloading:
            return Local()
        charged = [p for p in peers if p.battery_percent is not None and p.battery_percent > self.accept]
        if not charged:
            return Local()
        if self.fit == "best":
            return Offload(max(charged, key=lambda p: (p.battery_percent, p.agent)).agent)
        return Offload(charged[0].agent)

    def accepts(self, me: SelfState) -> bool:
        return me.battery is None or me.battery > self.accept


@dataclass
class ConsolidatePolicy:
    """Pack work onto the fewest nodes that still meet the deadline, so idle
    nodes stay idle and can sleep (the fog data-centre energy heuristic):
    among this agent and its peers, the *busiest* one whose expected completion
    stays within ``slack`` x the run time; if none does, the least loaded.
    The opposite of spreading: fewer awake nodes, somewhat longer queues."""

    slack: float = 3.0
    name: str = "consolidate"
    default_transfer_ms: float = 1.0

    def place(self, kind: str, weight: str, me: SelfState, peers: Sequence[Peer], *,
              run_ms: float) -> Decision:
        limit = self.slack * run_ms
        mine = expected_ms(me.queued, me.running, me.capacity, run_ms)
        options: list[tuple[float, float, str | None]] = [(-(me.queued + me.running) / max(1, me.capacity),
                                                           mine, None)]
        for p in peers:
            pr = p.presence
            transfer = p.rtt_ms if p.rtt_ms is not None else self.default_transfer_ms
            cost = expected_ms(pr.queue, pr.running, pr.capacity, run_ms, transfer)
            options.append((-(pr.queue + pr.running) / max(1, pr.capacity), cost, p.agent))
        fitting = [o for o in options if o[1] <= limit]
        if fitting:   # busiest first; ties: here before a peer, then by name
            _, _, where = min(fitting, key=lambda o: (o[0], o[2] is not None, o[2] or ""))
        else:
            _, _, where = min(options, key=lambda o: (o[1], o[2] is not None, o[2] or ""))
        return Local() if where is None else Offload(where)

    def accepts(self, me: SelfState) -> bool:
        return True
