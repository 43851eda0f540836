"""The tasks an agent holds: one :class:`~fogmesh.edge_agent.entry.Entry` each,
by its key and by the claim key it competes under (a takeover round's
``<id>#t``), with its timers. Pure.

Why one owner: the core's concerns (claims, answers, offloads, failover,
asking) all find, add, re-key and drop entries, and set their timers. Each
did it on a shared dict, and the claim-key index lived elsewhere: an entry
dropped without its index entry, or re-keyed in one and not the other, was a
bug waiting. Here the two move together, and a timer has one meaning each:
``claim_at`` (when to claim), ``run_until`` (a local run's timeout),
``lease_until`` (an offer's lease). Entry states still move only along
:data:`fogmesh.edge_agent.entry.TRANSITIONS`.
"""

from __future__ import annotations

from collections.abc import Iterator

from fogmesh.edge_agent.entry import Entry, EntryState


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
