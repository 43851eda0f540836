"""What this agent knows from the claims topic (claim dispatch): who won each
claim key, in which epoch, the takeover rounds decided since, the copies of
tasks peers won (kept to take over should they die), the answers peers
reported whose delivery the broker has not yet confirmed, and this agent's
own pending claims and connection epochs. Pure: ``now`` comes in; the core
turns what this book says into actions.

Why these live together: every agent must reach the same verdict from the
same order of claims, so the verdicts (:meth:`ClaimBook.record`,
:meth:`ClaimBook.round_winners`, :meth:`ClaimBook.takeover_claim`) read one
record of that order, and nothing else writes it. Bounded like the dedup
window (count and age), so a busy site cannot grow it without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container
from typing import NamedTuple

from fogmesh.claims import takeover_key
from fogmesh.edge_agent.actions import Publish
from fogmesh.edge_agent.recent import RecentMap, put_bounded
from fogmesh.errors import IllegalTransition


class HeldCopy(NamedTuple):
    """A task a peer won and has not reported answered: this agent's copy."""

    holder: str               # the winner of its latest decided round
    payload: bytes
    epoch: int | None         # the epoch the holder won it in (None: not said)


class PeerAnswer(NamedTuple):
    """A peer's answer, reported in its "done" record, not yet confirmed sent."""

    agent: str
    payload: bytes            # the task, to compete for if the peer dies
    answer: Publish


class ClaimBook:
    def __init__(self, *, me: str, max_items: int = 20_000, ttl_s: float = 900.0) -> None:
        self.me = me
        self.max_items = max_items
        self._winners: RecentMap[str] = RecentMap(max_items=max_items, ttl_s=ttl_s)
        self._win_epochs: RecentMap[int] = RecentMap(max_items=max_items, ttl_s=ttl_s)
        self._claimers: RecentMap[bool] = RecentMap(max_items=1000, ttl_s=60.0)   # peers seen claiming
        self._peer_epochs: OrderedDict[str, int] = OrderedDict()   # the newest epoch each peer claimed in
        self._cut: RecentMap[bool] = RecentMap(max_items=max_items, ttl_s=ttl_s)
        self._copies: OrderedDict[str, HeldCopy] = OrderedDict()
        self._answers: OrderedDict[str, PeerAnswer] = OrderedDict()
        self._rescues: dict[str, str] = {}         # rescue claim key -> the dead agent
        self._pending = 0                          # my claims out, not yet decided
        self._epoch = 0                            # control connections lost so far

    # -- the broker's order ------------------------------------------------------
    def record(self, key: str, agent: str, epoch: int | None, now: float) -> tuple[str, bool]:
        """A claim on ``key`` by ``agent``: (the winner, whether this claim decided it).
        The first claim the broker ordered wins; later ones change nothing."""
        decides = key not in self._winners
        winner = self._winners.add(key, agent, now)
        if winner == agent and epoch is not None:
            self._win_epochs.add(key, epoch, now)      # the first such claim's
        if agent != self.me:
            self._claimers.add(agent, True, now)
            if epoch and epoch > self._peer_epochs.get(agent, 0):
                put_bounded(self._peer_epochs, agent, epoch, 1000)
        return winner, decides

    def peer_epoch(self, agent: str) -> int:
        """The newest epoch ``agent`` made a claim in that this agent has seen
        (0: none said): it was on that connection or a later one by then."""
        return self._peer_epochs.get(agent, 0)

    def winner(self, key: str, now: float) -> str | None:
        return self._winners.get(key, now)

    def won_epoch(self, key: str, now: float) -> int | None:
        """The epoch ``key``'s winner claimed it in (None: not said, or undecided)."""
        return self._win_epochs.get(key, now)

    def round_winners(self, key: str, now: float) -> list[str]:
        """Who won each decided takeover round of ``key``, in order."""
        winners: list[str] = []
        while (won := self._winners.get(takeover_key(key, len(winners) + 1), now)) is not None:
            winners.append(won)
        return winners

    def won_a_round(self, key: str, agent: str, now: float) -> bool:
        return agent in self.round_winners(key, now)

    def takeover_claim(self, key: str, now: float, *, dead: Container[str], gone: str | None = None,
                       gone_epoch: int | None = None) -> str:
        """The claim key to compete for ``key`` under: the round after the
        latest one decided, as every contender counts them from the same
        order of claims. A round's winner may die or be cut off in turn, so
        this agent (back from a cut), ``gone`` (the peer whose tasks are
        contested) or a peer ``dead`` or away since may have won it; a live
        peer that won the latest round holds the task: its round is returned,
        and competing in a decided round loses at once."""
        rounds = self.round_winners(key, now)
        n, holder = len(rounds) + 1, (rounds[-1] if rounds else None)
        if holder is not None and holder == gone and gone_epoch is not None \
                and (self._win_epochs.get(takeover_key(key, n - 1), now) or 0) >= gone_epoch:
            return takeover_key(key, n - 1)     # ``gone`` is back and won that round since: it holds the task
        if holder is not None and holder not in (self.me, gone) and holder not in dead:
            return takeover_key(key, n - 1)
        return takeover_key(key, n)

    def others_claim(self) -> bool:
        """A peer claimed something lately (so claims here are contested)."""
        return len(self._claimers) > 0

    # -- this agent's claims and connection ----------------------------------------
    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def pending(self) -> int:
        """Claims this agent sent that the broker has not decided yet."""
        return self._pending

    def claim_sent(self) -> None:
        self._pending += 1

    def claim_settled(self) -> None:
        """A claim this agent sent was decided, or given up."""
        if self._pending == 0:
            raise IllegalTransition("a claim settled while none was pending")
        self._pending -= 1

    def lost_connection(self) -> None:
        """The control connection dropped: a new epoch begins."""
        self._epoch += 1

    def cut(self, key: str, now: float) -> None:
        """This agent was claiming ``key`` when its control connection dropped."""
        self._cut.add(key, True, now)

    def was_cut(self, key: str) -> bool:
        return key in self._cut

    # -- copies of peers' tasks --------------------------------------------------------------
    def keep_copy(self, key: str, holder: str, payload: bytes, epoch: int | None) -> None:
        put_bounded(self._copies, key, HeldCopy(holder, payload, epoch), self.max_items)

    def drop_copy(self, key: str) -> HeldCopy | None:
        return self._copies.pop(key, None)

    def round_decided(self, key: str, holder: str, epoch: int | None) -> None:
        """A takeover round of ``key`` went to ``holder``: the one to take the
        task from should it die in turn."""
        copy = self._copies.get(key)
        if copy is not None:
            self._copies[key] = HeldCopy(holder, copy.payload, epoch)

    def copies_held_by(self, agent: str, *, won_before: int | None = None) -> list[tuple[str, bytes]]:
        """Take out the copies ``agent`` holds (those it won before epoch
        ``won_before``, when given): (key, task payload), oldest first."""
        out = [(key, c.payload) for key, c in self._copies.items()
               if c.holder == agent and (won_before is None or c.epoch is None or c.epoch < won_before)]
        for key, _ in out:
            del self._copies[key]
        return out

    # -- answers peers reported, not yet confirmed sent -----------------------------------
    def keep_answer(self, key: str, agent: str, payload: bytes, answer: Publish) -> None:
        put_bounded(self._answers, key, PeerAnswer(agent, payload, answer), self.max_items)

    def answer_confirmed(self, key: str) -> None:
        self._answers.pop(key, None)

    def answers_by(self, agent: str) -> list[tuple[str, PeerAnswer]]:
        """Take out the answers ``agent`` reported and the broker has not confirmed."""
        out = [(key, a) for key, a in self._answers.items() if a.agent == agent]
        for key, _ in out:
            del self._answers[key]
        return out

    # -- session rescues ---------------------------------------------------------------
    def rescuing(self, rescue_key: str, agent: str) -> None:
        self._rescues[rescue_key] = agent

    def rescue_of(self, key: str) -> str | None:
        """The dead agent whose rescue ``key`` claims (taken out: decided once)."""
        return self._rescues.pop(key, None)
