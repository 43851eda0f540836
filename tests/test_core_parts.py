"""Tier 1: the parts of the agent core that own its state, each on its own
(the core's behaviour with them is in test_agent_core.py and its siblings)."""

from __future__ import annotations

import pytest

from fogmesh.announcements import Presence
from fogmesh.claims import takeover_key
from fogmesh.edge_agent.actions import Publish
from fogmesh.edge_agent.answer_book import AnswerBook, StoredAnswer
from fogmesh.edge_agent.ask_book import AskBook
from fogmesh.edge_agent.claim_book import ClaimBook
from fogmesh.edge_agent.confirmations import FLUSH_AFTER_S, FLUSH_AT, Confirmations
from fogmesh.edge_agent.offer_book import BUSY_S, OfferBook
from fogmesh.edge_agent.ordering import OrderCheck
from fogmesh.edge_agent.peers import Peer
from fogmesh.edge_agent.runner import LocalRunner
from fogmesh.errors import FogmeshError, IllegalTransition
from fogmesh.topics import Topics

pytestmark = pytest.mark.timeout(10)


# -- LocalRunner -------------------------------------------------------------------------------
def runner(**kw: int) -> LocalRunner:
    return LocalRunner(concurrency=kw.get("concurrency", 2), max_queue=kw.get("max_queue", 2), default_run_ms=10.0)


def test_the_runner_starts_queued_tasks_oldest_first_while_workers_are_free():
    r = runner(concurrency=1)
    r.enqueue("a")
    r.enqueue("b")
    assert r.next_to_start() == "a"
    r.started()
    assert r.next_to_start() is None       # the one worker is busy
    r.stopped()
    assert r.next_to_start() == "b"


def test_the_runner_is_full_with_every_worker_busy_and_the_queue_at_its_limit():
    r = runner(concurrency=1, max_queue=1)
    r.started()
    assert not r.is_full()
    r.enqueue("a")
    assert r.is_full()


def test_a_run_stopping_when_none_runs_is_refused_not_counted_below_zero():
    r = runner()
    with pytest.raises(IllegalTransition):
        r.stopped()
    assert r.running == 0


def test_only_tasks_beyond_the_next_workers_count_as_waiting_for_later():
    r = runner(concurrency=2, max_queue=5)
    for key in "abcd":
        r.enqueue(key)
    assert r.waiting_for_later() == ["c", "d"]


def test_run_time_estimates_start_at_the_default_and_follow_measured_runs():
    r = runner()
    assert r.run_ms("sleep") == 10.0
    r.observe("sleep", 100.0)
    assert r.run_ms("sleep") == 100.0
    r.observe("sleep", 200.0)
    assert r.run_ms("sleep") == pytest.approx(130.0)


def test_a_runner_without_workers_is_refused():
    with pytest.raises(ValueError):
        LocalRunner(concurrency=0, max_queue=1, default_run_ms=1.0)


# -- ClaimBook ---------------------------------------------------------------------------------
def test_the_first_claim_recorded_wins_and_later_ones_change_nothing():
    book = ClaimBook(me="a1")
    assert book.record("t1", "a2", None, 0.0) == ("a2", True)
    assert book.record("t1", "a1", None, 0.1) == ("a2", False)
    assert book.winner("t1", 0.2) == "a2"


def test_a_winning_claim_keeps_the_epoch_it_was_made_in():
    book = ClaimBook(me="a1")
    book.record("t1", "a2", 3, 0.0)
    book.record("t1", "a3", 5, 0.0)
    assert book.won_epoch("t1", 0.0) == 3


def test_takeover_rounds_are_counted_from_the_claims_seen():
    book = ClaimBook(me="a1")
    book.record(takeover_key("t1", 1), "a2", None, 0.0)
    book.record(takeover_key("t1", 2), "a3", None, 0.0)
    assert book.round_winners("t1", 0.0) == ["a2", "a3"]
    assert book.won_a_round("t1", "a2", 0.0)


def test_a_live_peer_holding_the_latest_round_is_competed_with_in_that_round():
    book = ClaimBook(me="a1")
    book.record(takeover_key("t1", 1), "a2", None, 0.0)
    assert book.takeover_claim("t1", 0.0, dead=set()) == takeover_key("t1", 1)     # loses at once
    assert book.takeover_claim("t1", 0.0, dead={"a2"}) == takeover_key("t1", 2)


def test_a_peer_gone_and_back_that_won_the_latest_round_since_keeps_the_task():
    book = ClaimBook(me="a1")
    book.record(takeover_key("t1", 1), "a2", 4, 0.0)
    assert book.takeover_claim("t1", 0.0, dead=set(), gone="a2", gone_epoch=4) == takeover_key("t1", 1)
    assert book.takeover_claim("t1", 0.0, dead=set(), gone="a2", gone_epoch=5) == takeover_key("t1", 2)


def test_pending_claims_cannot_settle_below_zero():
    book = ClaimBook(me="a1")
    book.claim_sent()
    book.claim_settled()
    with pytest.raises(IllegalTransition):
        book.claim_settled()


def test_copies_held_by_a_dead_peer_are_taken_out_once_oldest_first():
    book = ClaimBook(me="a1")
    book.keep_copy("t1", "a2", b"one", 1)
    book.keep_copy("t2", "a3", b"two", 1)
    book.keep_copy("t3", "a2", b"three", 1)
    assert book.copies_held_by("a2") == [("t1", b"one"), ("t3", b"three")]
    assert book.copies_held_by("a2") == []


def test_a_peer_back_keeps_the_copies_it_won_in_its_new_epoch():
    book = ClaimBook(me="a1")
    book.keep_copy("old", "a2", b"o", 1)
    book.keep_copy("new", "a2", b"n", 2)
    assert book.copies_held_by("a2", won_before=2) == [("old", b"o")]


def test_a_decided_takeover_round_makes_its_winner_the_holder_of_the_copy():
    book = ClaimBook(me="a1")
    book.keep_copy("t1", "a2", b"p", 1)
    book.round_decided("t1", "a3", 2)
    assert book.copies_held_by("a2") == []
    assert book.copies_held_by("a3") == [("t1", b"p")]


def test_copies_kept_are_bounded():
    book = ClaimBook(me="a1", max_items=2)
    for key in ("t1", "t2", "t3"):
        book.keep_copy(key, "a2", b"", None)
    assert [k for k, _ in book.copies_held_by("a2")] == ["t2", "t3"]


def test_a_peers_answer_confirmed_sent_is_no_longer_kept_to_redeliver():
    book = ClaimBook(me="a1")
    answer = Publish("r", b"{}")
    book.keep_answer("t1", "a2", b"task", answer)
    book.keep_answer("t2", "a2", b"task2", answer)
    book.answer_confirmed("t1")
    assert [k for k, _ in book.answers_by("a2")] == ["t2"]


def test_a_rescue_claim_is_decided_once():
    book = ClaimBook(me="a1")
    book.rescuing("r1", "a2")
    assert book.rescue_of("r1") == "a2"
    assert book.rescue_of("r1") is None


def test_only_claims_by_peers_count_as_others_claiming():
    book = ClaimBook(me="a1")
    book.record("t1", "a1", None, 0.0)
    assert not book.others_claim()
    book.record("t2", "a2", None, 0.0)
    assert book.others_claim()


def test_each_lost_control_connection_starts_a_new_epoch():
    book = ClaimBook(me="a1")
    book.lost_connection()
    book.lost_connection()
    assert book.epoch == 2


# -- OfferBook ---------------------------------------------------------------------------------
def peer(agent: str, queue: int = 0) -> Peer:
    return Peer(Presence(agent=agent, state="online", ts=0.0, queue=queue), seen_at=0.0)


def test_placement_sees_a_peers_queue_plus_the_offers_sent_it_since():
    book = OfferBook(bridge_fresh_s=10.0)
    book.sent("p1")
    book.sent("p1")
    book.settled("p1")
    [view] = book.views([peer("p1", queue=3)], now=0.0)
    assert view.presence.queue == 4


def test_outstanding_offers_never_count_below_zero():
    book = OfferBook(bridge_fresh_s=10.0)
    book.settled("p1")
    assert book.outstanding("p1") == 0


def test_a_busy_peer_is_left_out_until_its_next_presence_or_a_moment():
    book = OfferBook(bridge_fresh_s=10.0)
    book.busy("p1", now=0.0)
    assert book.views([peer("p1")], now=0.0) == []
    assert len(book.views([peer("p1")], now=BUSY_S + 0.01)) == 1
    book.busy("p1", now=1.0)
    book.heard_from("p1")
    assert len(book.views([peer("p1")], now=1.0)) == 1


def test_the_cloud_is_an_online_bridge_taking_the_kind_not_yet_tried():
    book = OfferBook(bridge_fresh_s=10.0)
    book.bridge_online("b1", ("sha256",), 0.0)
    book.bridge_online("b2", ("sha256",), 0.0)
    assert book.cloud_for("sha256", 1.0, exclude=()) == "b1"
    assert book.cloud_for("sha256", 1.0, exclude={"b1"}) == "b2"
    assert book.cloud_for("echo", 1.0, exclude=()) is None
    assert book.cloud_for("sha256", 11.0, exclude=()) is None     # not heard from lately


def test_a_bridge_away_takes_nothing_new_but_stays_known_as_a_bridge():
    book = OfferBook(bridge_fresh_s=10.0)
    book.bridge_online("b1", ("sha256",), 0.0)
    assert book.bridge_away("b1") is True
    assert book.bridge_away("b1") is False
    assert book.cloud_for("sha256", 0.0, exclude=()) is None
    assert book.is_bridge("b1")


# -- Confirmations -------------------------------------------------------------------------------
def test_answers_emitted_are_reported_once_by_the_next_record():
    c = Confirmations()
    c.emitting("t1")
    assert c.take_emitted() == ("t1",)
    assert c.take_emitted() == ()


def test_an_answer_reported_by_order_needs_no_report_when_its_puback_comes():
    c = Confirmations()
    c.emitting("t1")
    c.take_emitted()
    assert c.confirmed(["t1"], 0.0) is False
    assert c.flush_at is None and c.take_all() == ()


def test_confirmed_answers_go_out_after_a_moment_or_at_once_when_many():
    c = Confirmations()
    assert c.confirmed(["t1"], 5.0) is False
    assert c.flush_at == pytest.approx(5.0 + FLUSH_AFTER_S)
    assert c.confirmed([f"k{i}" for i in range(FLUSH_AT)], 5.0) is True
    assert len(c.take_all()) == FLUSH_AT + 1
    assert c.flush_at is None


def test_a_lost_connection_forgets_what_was_emitted_on_it():
    c = Confirmations()
    c.emitting("t1")
    c.connection_lost()
    assert c.take_emitted() == ()


def test_a_withdrawn_answer_is_sent_again_once():
    c = Confirmations()
    c.withdraw("t1")
    assert c.take_withdrawn("t1") is True
    assert c.take_withdrawn("t1") is False


# -- AskBook -------------------------------------------------------------------------------------
def test_a_question_is_settled_once_every_peer_asked_said_none():
    book = AskBook()
    book.open("t1", {"p1", "p2"})
    assert book.answered_by("t1", "p1") is False
    assert book.answered_by("t1", "p2") is True


def test_a_peer_gone_settles_the_questions_it_was_the_last_to_answer():
    book = AskBook()
    book.open("t1", {"p1"})
    book.open("t2", {"p1", "p2"})
    assert book.gone("p1") == ["t1"]
    assert book.awaiting("p2") == ["t2"]


# -- AnswerBook ----------------------------------------------------------------------------------
def test_an_answered_id_is_known_with_its_answer_for_the_dedup_window():
    book = AnswerBook(ttl_s=10.0)
    book.add("t1", 0.0, StoredAnswer("r", b"{}"))
    assert book.knows("t1", 5.0) and book.answer("t1", 5.0) == StoredAnswer("r", b"{}")
    assert not book.knows("t1", 11.0) and book.answer("t1", 11.0) is None


def test_answers_are_kept_within_a_byte_budget_oldest_dropped_first():
    book = AnswerBook(max_bytes=9)          # each answer is 5 bytes (topic and payload)
    book.add("t1", 0.0, StoredAnswer("r", b"1234"))
    book.add("t2", 0.0, StoredAnswer("r", b"5678"))
    assert book.answer("t1", 0.0) is None and book.answer("t2", 0.0) is not None
    assert book.knows("t1", 0.0)          # the id is still remembered


def test_an_answer_that_did_not_count_is_never_given_again_but_its_id_is_known():
    book = AnswerBook()
    book.add("t1", 0.0, StoredAnswer("r", b"{}"))
    book.drop_answer("t1")
    assert book.knows("t1", 0.0) and book.answer("t1", 0.0) is None


# -- OrderCheck ----------------------------------------------------------------------------------
def test_alone_the_claim_order_is_ok_without_a_probe():
    check = OrderCheck(me="a1", topics=Topics())
    assert check.start("tok", ["a1"], 0.0, wall_offset=0.0) == []
    assert check.verdict == "ok" and not check.active


def test_with_peers_the_verdict_waits_for_the_probe():
    check = OrderCheck(me="a1", topics=Topics())
    [probe] = check.start("tok", ["a2"], 0.0, wall_offset=0.0)
    assert probe.topic == Topics().claims
    assert check.verdict is None and check.active


def test_illegal_moves_in_the_parts_are_fogmesh_errors():
    assert issubclass(IllegalTransition, FogmeshError)


# -- EntryTable: entries, their claim-key index, their timers ---------------------------------

def table_entry(key: str = "t1", **fields):  # noqa: ANN201
    from fogmesh.edge_agent.entry import Entry
    return Entry(key=key, received=0.0, tokens=[], **fields)


def test_an_entry_is_found_by_its_key_and_by_the_claim_key_it_competes_under():
    from fogmesh.edge_agent.entry_table import EntryTable
    table = EntryTable()
    e = table.add(table_entry())
    assert table.get("t1") is e and table.by_claim("t1") is e and "t1" in table and len(table) == 1
    table.compete_under(e, "t1#t")
    assert table.by_claim("t1#t") is e and table.by_claim("t1") is None and e.claim_key == "t1#t"
    table.drop(e)
    assert table.get("t1") is None and table.by_claim("t1#t") is None and len(table) == 0


def test_a_dropped_entry_leaves_no_claim_key_behind_for_a_new_one():
    from fogmesh.edge_agent.entry_table import EntryTable
    table = EntryTable()
    old = table.add(table_entry(claim_key="t1#t"))
    table.drop(old)
    new = table.add(table_entry())
    assert table.by_claim("t1#t") is None and table.by_claim("t1") is new


def test_each_timer_has_one_meaning_and_the_table_knows_the_earliest():
    from fogmesh.edge_agent.entry import EntryState
    from fogmesh.edge_agent.entry_table import EntryTable
    table = EntryTable()
    a, b = table.add(table_entry("a")), table.add(table_entry("b"))
    table.run_until(a, 30.0)
    table.lease_until(b, 12.0)
    assert table.next_deadline() == 12.0
    table.stop_timers(b)
    assert table.next_deadline() == 30.0 and b.lease_until is None
    table.claim_at(b, 5.0)
    assert table.claims_due(4.9) == [] and table.claims_due(5.0) == [b]
    a.state = EntryState.RUNNING
    assert table.claims_due(100.0) == [b]


def test_walking_the_table_is_a_snapshot_that_survives_drops():
    from fogmesh.edge_agent.entry_table import EntryTable
    table = EntryTable()
    entries = [table.add(table_entry(k)) for k in "abc"]
    for e in table:
        table.drop(e)
    assert len(table) == 0 and len(entries) == 3


def test_answers_leave_with_their_ids_whatever_the_byte_budget_allows():
    book = AnswerBook(max_items=3, ttl_s=900.0, max_bytes=1 << 20)
    for n in range(10):
        book.add(f"t{n}", 0.0, StoredAnswer("r", b"{}"))
    assert book.answer("t9", 1.0) is not None and book.answer("t6", 1.0) is None
    assert len(book._answers) == 3


# -- the core's mode ---------------------------------------------------------------------------
def test_every_mode_is_one_combination_of_leaving_and_degraded():
    from fogmesh.edge_agent.mode import MODE_TRANSITIONS, Mode
    combos = {(m.leaving, m.degraded_by) for m in Mode}
    assert len(combos) == len(Mode) == 9 and set(MODE_TRANSITIONS) == set(Mode)


def test_a_mode_moves_only_forward_in_leaving_and_is_degraded_by_claims_for_good():
    from fogmesh.edge_agent.mode import MODE_TRANSITIONS, Change
    order = {None: 0, "draining": 1, "stopping": 2}
    for mode, row in MODE_TRANSITIONS.items():
        for change, to in row.items():
            assert order[to.leaving] >= order[mode.leaving], (mode, change, to)
            if mode.degraded_by == "claims":
                assert to.degraded_by == "claims", (mode, change, to)
            if change is Change.JOURNAL_WORKS:
                assert mode.degraded_by == "journal" and to.degraded_by is None
            if change in (Change.JOURNAL_FAILED, Change.CLAIMS_DIVERGED):
                assert mode.degraded_by is None and to.leaving == mode.leaving


def test_the_degraded_reason_stays_while_the_agent_drains_and_goes_when_the_journal_works():
    from fogmesh.edge_agent.mode import Change, Mode, ModeState
    m = ModeState()
    assert m.change(Change.JOURNAL_FAILED, reason="disk full") and m.degraded == "disk full"
    assert not m.change(Change.CLAIMS_DIVERGED, reason="order") and m.degraded == "disk full"
    assert m.change(Change.DRAIN) and m.current is Mode.DRAINING_DEGRADED and m.degraded == "disk full"
    assert not m.change(Change.DRAIN)
    assert m.change(Change.JOURNAL_WORKS) and m.current is Mode.DRAINING and m.degraded is None
    assert m.change(Change.STOP) and not m.takes_tasks and m.leaving and not m.draining
