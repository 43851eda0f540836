"""The tasks an agent holds: one :class:`~fogmesh.edge_agent.entry.Entry` each,
by its key and by the claim key it competes under (a takeover round's
``<id>#t``), with its timers. Pure.

Why one owner: the core's concerns (claims, answers, offloads, failover,
asking) all find, add, re-key and drop entries, set their timers and move
them on. Each did it on a shared dict, and the claim-key index lived
elsewhere: an entry dropped without its index entry, or re-keyed in one and
not the other, was a bug waiting. Here the two move together, and a timer
has one meaning each: ``claim_at`` (when to claim), ``run_until`` (a local
run's timeout), ``lease_until`` (an offer's lease).

The table is the only writer of its entries (tests/test_house_rules.py
checks): the concerns read an entry's fields, and change them through the
named transitions below (:meth:`EntryTable.offered`, :meth:`EntryTable.fence`,
:meth:`EntryTable.hold_answer`, ...), each one step of
:data:`fogmesh.edge_agent.entry.TRANSITIONS` with the fields that go with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fogmesh.edge_agent.entry import Entry, EntryState, OfferState

S = EntryState


class EntryTable:
    def __init__(self) -> None:
        self._by_key: dict[str, Entry] = {}
        self._by_claim: dict[str, str] = {}        # claim key -> entry key, where they differ

    # -- what it holds ---------------------------------------------------------------------
    def add(self, entry: Entry) -> Entry:
        self._by_key[entry.key] = entry
        if entry.claim_key != entry.key:
            self._by_claim[entry.claim_key] = entry.key
        return entry

    def get(self, key: str) -> Entry | None:
        return self._by_key.get(key)

    def __getitem__(self, key: str) -> Entry:
        return self._by_key[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Entry]:
        """A snapshot: the caller may add and drop entries while it goes."""
        return iter(list(self._by_key.values()))

    def by_claim(self, claim_key: str) -> Entry | None:
        """The entry competing under ``claim_key`` (its own key, or a takeover round's)."""
        entry = self._by_key.get(self._by_claim.get(claim_key, claim_key))
        return entry if entry is not None and entry.claim_key == claim_key else None

    def compete_under(self, entry: Entry, claim_key: str) -> None:
        """``entry`` competes under a new claim key (the next takeover round)."""
        self._by_claim.pop(entry.claim_key, None)
        entry.claim_key = claim_key
        if claim_key != entry.key:
            self._by_claim[claim_key] = entry.key

    def drop(self, entry: Entry) -> None:
        """No longer held (answered, given up, superseded)."""
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]
        self._by_claim.pop(entry.claim_key, None)

    # -- transitions: the only writes to an entry ---------------------------------------------
    @staticmethod
    def add_tokens(entry: Entry, tokens: list[Any], connection: int | None = None) -> None:
        """More copies of its message reached this agent (from the task queue's
        ``connection``, or None: MQTT): each is acknowledged when it is done."""
        entry.tokens.extend(tokens)
        if tokens:
            entry.queue_connections.add(connection)

    def held_only_via(self, connection: int) -> list[Entry]:
        """The tasks held for their devices only through messages the task
        queue's ``connection`` delivered."""
        return [e for e in self._by_key.values()
                if e.origin is None and e.tokens and e.queue_connections == {connection}]

    @staticmethod
    def asking(entry: Entry) -> None:
        """A resubmission: the peers are asked who holds or answered it."""
        entry.move(S.ASKING)

    @staticmethod
    def claiming(entry: Entry) -> None:
        """It is competed for (again): its claim is due at its ``claim_at``."""
        entry.move(S.CLAIMING)

    @staticmethod
    def claimed(entry: Entry) -> None:
        """Its claim went out: the broker's first claim decides."""
        entry.move(S.CLAIMED)
        entry.claim_at = None

    @staticmethod
    def placing(entry: Entry, *, recorded: Any = None) -> None:
        """This agent is responsible for it (``recorded``: a peer's answer to
        deliver instead of running it)."""
        entry.move(S.PLACING)
        if recorded is not None:
            entry.recorded = recorded

    @staticmethod
    def queued(entry: Entry) -> None:
        entry.move(S.QUEUED)

    @staticmethod
    def running(entry: Entry, now: float, *, until: float | None) -> None:
        """Started here at ``now``; in a worker, its timeout at ``until`` (inline: None)."""
        entry.move(S.RUNNING)
        entry.started = now
        if until is not None:
            entry.run_until = until

    @staticmethod
    def remembered(entry: Entry) -> None:
        """Journaled: forgotten there once answered."""
        entry.remembered = True

    @staticmethod
    def offered(entry: Entry, peer: str, offer_id: str, now: float, *, lease_until: float) -> None:
        """Offered to ``peer`` (a peer or a bridge), never offered it again."""
        entry.tried.add(peer)
        entry.offer_ids.add(offer_id)
        entry.offer = OfferState(peer, offer_id, now)
        entry.move(S.OFFERED)
        entry.lease_until = lease_until

    @staticmethod
    def offer_accepted(entry: Entry, *, lease_until: float) -> None:
        assert entry.offer is not None
        entry.offer.accepted = True
        entry.lease_until = lease_until

    @staticmethod
    def offer_ended(entry: Entry) -> None:
        """Its offer is over (a result, a reject, a lease run out, let go)."""
        entry.offer = None

    @staticmethod
    def deliver_instead(entry: Entry, answer: Any) -> None:
        """A peer made its answer (a "done" record): if this agent wins it, it
        delivers that answer, never runs the task."""
        entry.recorded = answer

    def fence(self, entry: Entry, claim_key: str) -> None:
        """Held across a lost connection: answered only after winning ``claim_key``."""
        entry.fenced = True
        self.compete_under(entry, claim_key)

    @staticmethod
    def unfence(entry: Entry) -> list[Any] | None:
        """Its fence is lifted: the answer it held, if made (taken out)."""
        held, entry.pending = entry.pending, None
        entry.fenced = False
        return held

    def hold_answer(self, entry: Entry, answer: Any, pending: list[Any]) -> None:
        """Answered while fenced: ``pending`` (the answer's actions) waits for the fence."""
        entry.answer = answer
        entry.move(S.ANSWERED)
        self.stop_timers(entry)
        entry.pending = pending

    def done(self, entry: Entry) -> None:
        """Answered: no longer held."""
        self.drop(entry)
        entry.move(S.DONE)
        self.stop_timers(entry)

    # -- timers ------------------------------------------------------------------------------
    @staticmethod
    def claim_at(entry: Entry, at: float | None) -> None:
        entry.claim_at = at

    @staticmethod
    def run_until(entry: Entry, at: float | None) -> None:
        """A local run's timeout (its worker is killed then)."""
        entry.run_until = at

    @staticmethod
    def lease_until(entry: Entry, at: float | None) -> None:
        """An offer's lease (placed again then, if no answer came)."""
        entry.lease_until = at

    @staticmethod
    def stop_timers(entry: Entry) -> None:
        """Its run or offer is over (answered, or held while fenced)."""
        entry.run_until = entry.lease_until = None

    def next_deadline(self) -> float | None:
        """The earliest timer of any entry, and of any queued task's ``deadline_ms``."""
        times = [t for e in self._by_key.values() for t in (e.claim_at, e.run_until, e.lease_until)
                 if t is not None]
        times += [e.received + e.task.deadline_ms / 1000 for e in self._by_key.values()
                  if e.state is EntryState.QUEUED and e.task and e.task.deadline_ms]
        return min(times, default=None)

    def claims_due(self, now: float) -> list[Entry]:
        """Entries whose claim is due (claim dispatch)."""
        return [e for e in self._by_key.values()
                if e.state is EntryState.CLAIMING and e.claim_at is not None and e.claim_at <= now]
