"""The agent's brain, sans-IO: messages and clock ticks in, actions out.

No sockets, threads, clocks or processes here (h11's lesson): the IO shell
(:mod:`edge_agent.agent`) feeds :meth:`AgentCore.on_message`,
:meth:`AgentCore.on_finished` and :meth:`AgentCore.on_tick` with ``now`` and
carries out the returned :data:`Action` values in order. The same core can be
driven by a test or a simulator with a fake clock.

Guarantees it implements:

* every task message gets exactly one outcome: a reply on ``reply_to``, or a
  dead letter on ``{root}/errors`` when there is no usable reply topic;
* a task message is acknowledged (PUBACK) only after its outcome is published,
  so an agent that dies mid-task leaves the task with the broker, not lost;
* a task id seen again within the dedup window is acknowledged and dropped;
* in ``claim`` dispatch (brokers without shared subscriptions) only the agent
  whose claim the broker ordered first answers (see :mod:`edge_agent.claims`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Union

from edge_agent.claims import Claim, claim_delay, claim_key, tie_break
from edge_agent.recent import RecentMap
from fogmesh.errors import InvalidMessage
from fogmesh.messages import DEFAULT_LIMITS, DeadLetter, ErrorInfo, Limits, Reply, Task, \
    Timing, excerpt, parse_task
from fogmesh.registry import Registry, TaskKind
from fogmesh.topics import Topics

DISPATCH_MODES = ("shared", "claim")


# -- actions the shell carries out, in order -------------------------------
@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Ack:
    """Acknowledge the received message behind ``token`` (opaque to the core)."""

    token: Any


@dataclass(frozen=True)
class Run:
    """Start ``task`` with ``kind``; report back through ``on_finished``."""

    task: Task
    kind: TaskKind
    timeout_s: float


@dataclass(frozen=True)
class Cancel:
    """Stop the run of ``task_id`` (it passed its timeout)."""

    task_id: str


@dataclass(frozen=True)
class Remember:
    """Journal an accepted task, so a restarted agent can finish it."""

    key: str
    payload: bytes


@dataclass(frozen=True)
class Forget:
    """The journaled task is answered."""

    key: str


Action = Union[Publish, Ack, Run, Cancel, Remember, Forget]


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    topics: Topics = field(default_factory=Topics)
    concurrency: int = 2
    max_queue: int = 1000
    dispatch: str = "shared"
    limits: Limits = DEFAULT_LIMITS
    dedup_items: int = 20_000
    dedup_ttl_s: float = 900.0

    def __post_init__(self) -> None:
        if self.dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}")
        if self.concurrency < 1 or self.max_queue < 0:
            raise ValueError("concurrency must be >= 1 and max_queue >= 0")


@dataclass
class _Entry:
    """One task message this agent holds. Mutable, private to the core."""

    key: str
    received: float
    tokens: list[Any]
    task: Task | None = None
    kind: TaskKind | None = None
    error: InvalidMessage | None = None   # answer with this instead of running
    payload: bytes = b""
    state: str = "claiming"               # claiming -> claimed -> queued -> running
    claim_at: float | None = None
    started: float | None = None
    timeout_at: float | None = None
    remembered: bool = False


@dataclass
class Counters:
    received: int = 0
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    busy: int = 0
    timeouts: int = 0
    claims_won: int = 0
    claims_lost: int = 0
    bad_claims: int = 0


class AgentCore:
    def __init__(self, config: AgentConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.accepting = True
        self.counters = Counters()
        self._entries: dict[str, _Entry] = {}
        self._queue: deque[str] = deque()
        self._running = 0
        self._claimed = 0          # claims published, not yet decided
        self._peers: RecentMap[bool] = RecentMap(max_items=1000, ttl_s=60.0)  # agents seen claiming
        self._done: RecentMap[bool] = RecentMap(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self._winners: RecentMap[str] = RecentMap(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)

    # -- views ---------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    @property
    def held(self) -> int:
        """Task messages held in any state (not yet answered)."""
        return len(self._entries)

    def next_deadline(self) -> float | None:
        times = [t for e in self._entries.values() for t in (e.claim_at, e.timeout_at) if t is not None]
        times += [e.received + e.task.deadline_ms / 1000 for e in self._entries.values()
                  if e.state == "queued" and e.task and e.task.deadline_ms]
        return min(times, default=None)

    # -- inputs ----------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, token: Any, now: float) -> list[Action]:
        t = self.config.topics
        if topic == t.tasks:
            return self._on_task(payload, token, now)
        if topic == t.claims and self.config.dispatch == "claim":
            return self._on_claim(payload, token, now)
        return [Ack(token)]

    def stop_accepting(self) -> None:
        """New task messages are left unacknowledged (the broker redelivers them
        to this session later); held tasks still finish."""
        self.accepting = False

    def _on_task(self, payload: bytes, token: Any, now: float) -> list[Action]:
        if not self.accepting:
            return []
        self.counters.received += 1
        try:
            task: Task | None = parse_task(payload, limits=self.config.limits)
            error = None
        except InvalidMessage as exc:
            task, error = None, exc
        task_id = task.id if task else (error.task_id if error else None)
        key = claim_key(task_id, payload)

        held = self._entries.get(key)
        if held is not None:             # redelivery of a task we hold: ack it when done
            held.tokens.append(token)
            self.counters.duplicates += 1
            return []
        if key in self._done:            # answered already: swallow the duplicate
            self.counters.duplicates += 1
            return [Ack(token)]

        entry = _Entry(key=key, received=now, tokens=[token], task=task, error=error,
                       payload=payload)
        if task is not None and task.kind not in self.registry:
            entry.error = InvalidMessage("unknown_kind",
                                         f"unknown kind {task.kind!r}; agents here run: "
                                         f"{', '.join(self.registry.names())}",
                                         task_id=task.id, reply_to=task.reply_to)
        elif task is not None:
            entry.kind = self.registry.get(task.kind)
        self._entries[key] = entry

        if self.config.dispatch == "shared":
            return self._accept(entry, now)
        winner = self._winners.get(key, now)
        if winner is not None:
            return self._decided(entry, winner, now)
        # Load = what this agent has won or may win; undecided tasks every agent
        # holds alike do not count, or every agent would wait the same.
        entry.claim_at = now + claim_delay(queued=len(self._queue) + self._claimed,
                                           running=self._running, capacity=self.config.concurrency)
        if len(self._peers) > 0:
            entry.claim_at += tie_break(key, self.config.agent_id)
        return self._fire_claims(now) if entry.claim_at <= now else []

    def _on_claim(self, payload: bytes, token: Any, now: float) -> list[Action]:
        try:
            claim = Claim.decode(payload)
        except InvalidMessage:
            self.counters.bad_claims += 1
            return [Ack(token)]
        winner = self._winners.add(claim.task, claim.agent, now)
        if claim.agent != self.config.agent_id:
            self._peers.add(claim.agent, True, now)
        actions: list[Action] = [Ack(token)]
        entry = self._entries.get(claim.task)
        if entry is not None and entry.state in ("claiming", "claimed"):
            actions += self._decided(entry, winner, now)
        return actions

    def _decided(self, entry: _Entry, winner: str, now: float) -> list[Action]:
        if entry.state == "claimed":
            self._claimed -= 1
        if winner == self.config.agent_id:
            self.counters.claims_won += 1
            return self._accept(entry, now)
        self.counters.claims_lost += 1
        del self._entries[entry.key]
        return [Ack(tok) for tok in entry.tokens]

    def _accept(self, entry: _Entry, now: float) -> list[Action]:
        if entry.error is not None:
            return self._answer_error(entry, entry.error.code, entry.error.message, now)
        assert entry.task is not None and entry.kind is not None
        if entry.kind.inline and not self._queue:
            return self._start(entry, now)   # answered within this step: nothing to journal
        if len(self._queue) + self._running >= self.config.concurrency + self.config.max_queue:
            self.counters.busy += 1
            return self._answer_error(entry, "busy", f"agent {self.config.agent_id} has "
                                      f"{len(self._queue)} tasks queued; retry later", now)
        entry.state = "queued"
        self._queue.append(entry.key)
        actions: list[Action] = []
        if not entry.remembered:
            entry.remembered = True
            actions.append(Remember(entry.key, entry.payload))
        return actions + self._start_queued(now)

    def restore(self, *, done: list[str], unfinished: list[bytes], now: float) -> list[Action]:
        """After a restart: ids answered before (so redeliveries are swallowed),
        and tasks accepted but not answered (run them again, in order)."""
        for key in done:
            self._done.add(key, True, now)
        actions: list[Action] = []
        for payload in unfinished:
            try:
                task = parse_task(payload, limits=self.config.limits)
            except InvalidMessage:
                continue
            if task.id in self._entries or task.id in self._done or task.kind not in self.registry:
                continue
            entry = _Entry(key=task.id, received=now, tokens=[], task=task, payload=payload,
                           kind=self.registry.get(task.kind), remembered=True)
            self._entries[task.id] = entry
            self._winners.add(task.id, self.config.agent_id, now)
            actions += self._accept(entry, now)
        return actions

    def _start(self, entry: _Entry, now: float) -> list[Action]:
        assert entry.task is not None and entry.kind is not None
        timeout = entry.kind.timeout_s
        if entry.task.deadline_ms:
            remaining = entry.received + entry.task.deadline_ms / 1000 - now
            if remaining <= 0:
                return self._answer_error(entry, "deadline_exceeded",
                                          f"waited {1000 * (now - entry.received):.0f} ms, "
                                          f"past deadline_ms={entry.task.deadline_ms}", now)
            timeout = min(timeout, remaining)
        entry.state = "running"
        entry.started = now
        if not entry.kind.inline:
            self._running += 1
            entry.timeout_at = now + timeout
        return [Run(entry.task, entry.kind, timeout)]

    def _start_queued(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._queue and self._running < self.config.concurrency:
            entry = self._entries[self._queue.popleft()]
            actions += self._start(entry, now)
        return actions

    def on_finished(self, task_id: str, now: float, *, result: Any = None,
                    error: ErrorInfo | None = None) -> list[Action]:
        """A run ended. Late results of runs already timed out are ignored."""
        entry = self._entries.get(task_id)
        if entry is None or entry.state != "running":
            return []
        if not (entry.kind and entry.kind.inline):
            self._running -= 1
        if error is not None:
            actions = self._answer_error(entry, error.code, error.message, now)
        else:
            actions = self._answer_ok(entry, result, now)
        return actions + self._start_queued(now)

    def on_tick(self, now: float) -> list[Action]:
        actions = self._fire_claims(now)
        for entry in list(self._entries.values()):
            if entry.state == "running" and entry.timeout_at is not None and now >= entry.timeout_at:
                self._running -= 1
                self.counters.timeouts += 1
                assert entry.task is not None
                actions.append(Cancel(entry.task.id))
                actions += self._answer_error(
                    entry, "timeout", f"kind {entry.task.kind!r} ran past its timeout of "
                    f"{now - (entry.started or now):.1f} s", now)
            elif entry.state == "queued" and entry.task and entry.task.deadline_ms \
                    and now >= entry.received + entry.task.deadline_ms / 1000:
                self._queue.remove(entry.key)
                actions += self._answer_error(entry, "deadline_exceeded",
                                              f"still queued after deadline_ms={entry.task.deadline_ms}", now)
        return actions + self._start_queued(now)

    def _fire_claims(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for entry in self._entries.values():
            if entry.state == "claiming" and entry.claim_at is not None and entry.claim_at <= now:
                entry.state = "claimed"
                entry.claim_at = None
                self._claimed += 1
                actions.append(Publish(self.config.topics.claims,
                                       Claim(entry.key, self.config.agent_id).encode()))
        return actions

    # -- outcomes --------------------------------------------------------------
    def _timing(self, entry: _Entry, now: float) -> Timing:
        started = entry.started if entry.started is not None else now
        return Timing(queue=1000 * (started - entry.received), run=1000 * (now - started),
                      total=1000 * (now - entry.received))

    def _answer_ok(self, entry: _Entry, result: Any, now: float) -> list[Action]:
        assert entry.task is not None
        reply = Reply.ok(entry.task.id, result, worker=self.config.agent_id, tier="local",
                         ms=self._timing(entry, now))
        try:
            payload = reply.encode()
        except InvalidMessage as exc:
            return self._answer_error(entry, "bad_result", exc.message, now)
        self.counters.completed += 1
        return self._finish(entry, Publish(entry.task.reply_to, payload), now)

    def _answer_error(self, entry: _Entry, code: str, message: str, now: float) -> list[Action]:
        self.counters.failed += 1
        task = entry.task
        task_id = task.id if task else (entry.error.task_id if entry.error else None)
        reply_to = task.reply_to if task else (entry.error.reply_to if entry.error else None)
        if reply_to:
            reply = Reply.failed(task_id, code, message, worker=self.config.agent_id,
                                 tier="local", ms=self._timing(entry, now))
            return self._finish(entry, Publish(reply_to, reply.encode()), now)
        self.counters.dead_letters += 1
        letter = DeadLetter(agent=self.config.agent_id, ts=now, error=ErrorInfo(code, message),
                            topic=self.config.topics.tasks, id=task_id,
                            excerpt=excerpt(entry.payload))
        return self._finish(entry, Publish(self.config.topics.errors, letter.encode()), now)

    def _finish(self, entry: _Entry, publish: Publish, now: float) -> list[Action]:
        self._entries.pop(entry.key, None)
        entry.state = "done"
        self._done.add(entry.key, True, now)
        forget: list[Action] = [Forget(entry.key)] if entry.remembered else []
        return [publish] + forget + [Ack(tok) for tok in entry.tokens]
