"""The agent shell's own decisions, pure and on a fake clock: a rival
instance of this id, the presence hold, the journal's retries and the task
subscriptions while degraded, stopping and draining, when to wake."""

from __future__ import annotations

from fogmesh.announcements import Presence
from fogmesh.edge_agent.intake import IntakeGate
from fogmesh.edge_agent.journal_health import JournalHealth, wants_task_subscriptions
from fogmesh.edge_agent.presence_hold import PresenceHold
from fogmesh.edge_agent.rival_watch import RivalWatch, rival_presence, this_one_leaves
from fogmesh.edge_agent.stop_plan import StopPlan
from fogmesh.edge_agent.wakeup import next_wake
from fogmesh.log_limit import LogLimit, LogLimits


def rival(state: str = "online", *, since: float = 100.0, instance: str = "other", ts: float | None = None,
          period: float | None = None) -> Presence:
    return Presence(agent="a1", state=state, ts=since if ts is None else ts, since=since, instance=instance,
                    period=period)


# -- a rival instance of this id ---------------------------------------------------------

def test_a_rivals_online_is_judged_a_second_later_by_its_latest_word():
    watch = RivalWatch(wait_s=1.0)
    watch.heard(rival(), 10.0)
    assert watch.waiting and watch.next_at == 11.0
    watch.heard(rival(ts=100.5), 10.5)               # a later word does not push the judgement back
    assert watch.due(10.9) == [] and watch.next_at == 11.0
    (judged,) = watch.due(11.0)
    assert judged.instance == "other" and not watch.waiting


def test_a_rival_that_said_online_once_and_nothing_after_is_not_alive():
    """A broker restarted from an old persistence file brought back a dead
    instance's retained "online": the restarted agent left for good."""
    watch = RivalWatch(wait_s=1.0)
    watch.heard(rival(period=0.5), 10.0)
    assert watch.waiting and watch.next_at == 11.25             # two and a half of its periods
    assert watch.due(11.25) == [] and not watch.waiting


def test_a_rivals_offline_before_its_judgement_ends_it():
    # A restarted agent resuming its control session reads its previous instance's last "online", then "offline".
    watch = RivalWatch(wait_s=1.0)
    watch.heard(rival(), 10.0)
    watch.heard(rival("offline"), 10.2)
    assert not watch.waiting and watch.due(20.0) == []


def test_a_word_on_its_own_presence_topic_is_a_rivals_only_from_another_instance():
    assert rival_presence(rival().encode(), agent_id="a1", instance="mine") == rival()
    assert rival_presence(rival(instance="mine").encode(), agent_id="a1", instance="mine") is None
    assert rival_presence(b"not a presence", agent_id="a1", instance="mine") is None


def test_the_instance_that_started_later_leaves():
    assert this_one_leaves(since=200.0, instance="mine", other=rival(since=100.0))
    assert not this_one_leaves(since=50.0, instance="mine", other=rival(since=100.0))
    assert this_one_leaves(since=100.0, instance="zz", other=rival(since=100.0, instance="aa"))


# -- the presence hold ---------------------------------------------------------------------

def test_shared_presence_waits_for_the_start_up_subscriptions():
    hold = PresenceHold(shared=True)
    assert hold.waits(0.0, subscribed=False, resubscribed=True, rival_waiting=False)
    assert not hold.waits(0.0, subscribed=True, resubscribed=True, rival_waiting=False)
    assert not PresenceHold(shared=False).waits(0.0, subscribed=False, resubscribed=False, rival_waiting=False)


def test_after_a_task_link_drop_presence_waits_for_its_subscriptions_or_ten_seconds_of_control():
    hold = PresenceHold(shared=True, hold_s=10.0)
    hold.task_link_down()
    hold.control_down()
    assert hold.waits(100.0, subscribed=True, resubscribed=False, rival_waiting=False)
    assert hold.poll_at(100.0) == float("inf")                 # control down: its return is an event
    hold.control_up(101.0)
    assert hold.poll_at(101.0) == 101.1
    assert not hold.released(105.0, subscribed=True, resubscribed=False, rival_waiting=False)
    assert hold.released(106.0, subscribed=True, resubscribed=True, rival_waiting=False)      # announce at once
    assert not hold.released(107.0, subscribed=True, resubscribed=True, rival_waiting=False)  # once


def test_a_hold_ends_ten_seconds_after_the_control_connection_came_back_anyway():
    hold = PresenceHold(shared=True, hold_s=10.0)
    hold.task_link_down()
    hold.control_up(101.0)
    assert hold.waits(110.9, subscribed=True, resubscribed=False, rival_waiting=False)
    assert hold.released(111.0, subscribed=True, resubscribed=False, rival_waiting=False)


def test_presence_waits_while_a_rival_is_judged():
    assert PresenceHold(shared=False).waits(0.0, subscribed=True, resubscribed=True, rival_waiting=True)


# -- the journal while degraded ------------------------------------------------------------

def test_a_degraded_agent_tries_its_journal_every_presence_period_at_most_five_seconds():
    health = JournalHealth(presence_period=0.5)
    health.failed(10.0)
    assert not health.due(10.4) and health.due(10.5)
    health.still_failing(10.5)
    assert health.retry_at == 11.0
    health.works()
    assert not health.due(1e9)
    assert JournalHealth(presence_period=30.0).every_s == 5.0


def test_a_degraded_agent_keeps_its_task_subscriptions_only_as_the_last_to_answer():
    assert wants_task_subscriptions(draining=False, degraded=False, last_to_answer=False)
    assert not wants_task_subscriptions(draining=False, degraded=True, last_to_answer=False)
    assert wants_task_subscriptions(draining=False, degraded=True, last_to_answer=True)
    assert not wants_task_subscriptions(draining=True, degraded=False, last_to_answer=True)


# -- stopping and draining -------------------------------------------------------------------

def test_a_stop_ends_once_nothing_is_held_or_at_its_deadline():
    plan = StopPlan()
    assert not plan.ends(0.0, held=0)
    plan.asked(by=10.0)
    assert plan.poll_at(1.0) == 1.05
    assert not plan.ends(1.0, held=2) and plan.ends(1.0, held=0) and plan.ends(10.0, held=2)


def test_a_drain_waits_a_quiet_half_second_then_finishes_what_is_held():
    plan = StopPlan()
    plan.drain(5.0)
    plan.look(5.0)
    assert plan.quiet(5.4) and not plan.quiet(5.5)
    assert plan.by == 5.0 + 3600.0 and plan.ends(5.5, held=0)


# -- flow control and waking ------------------------------------------------------------------

def test_when_to_wake_is_the_earliest_deadline_but_a_held_presence():
    kw = dict(core_due=None, journal_retry_at=float("inf"), probe_at=float("inf"), beat_at=50.0,
              rivals_at=float("inf"), presence_at=12.0, presence_held=False, stop_poll_at=float("inf"),
              hold_poll_at=float("inf"))
    assert next_wake(**kw) == 12.0
    assert next_wake(**{**kw, "presence_held": True}) == 50.0
    assert next_wake(**{**kw, "core_due": 3.0}) == 3.0
    assert next_wake(**{**kw, "stop_poll_at": 1.05}) == 1.05


def test_the_intake_gate_and_the_shell_agree_on_half():
    gate = IntakeGate(high=500, low=250)
    assert gate.reopens_at == 250


def test_a_repeating_log_line_is_written_first_then_once_per_period_with_what_was_left_out():
    lines = LogLimit(every_s=10.0)
    assert lines.take(100.0) == 0                     # the first, at once
    assert [lines.take(100.0 + t) for t in (0.05, 0.1, 5.0, 9.99)] == [None] * 4
    assert lines.take(110.0) == 4                     # ten seconds on: it says what was left out
    assert lines.take(110.5) is None
    assert lines.take(200.0) == 1                     # a quiet spell: the next one at once
    assert lines.take(200.1) is None and lines.left_out == 1


def test_two_hundred_drops_in_twelve_seconds_make_two_lines():
    lines = LogLimit(every_s=10.0)
    written = [n for n in (lines.take(i * 0.06) for i in range(200)) if n is not None]
    assert written == [0, 166]


def test_a_burst_of_lines_is_written_then_one_per_period():
    lines = LogLimit(every_s=10.0, burst=3)
    assert [lines.take(100.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert lines.take(105.0) is None and lines.take(110.0) == 3


def test_each_source_has_its_lines_and_all_of_them_a_bound():
    lines = LogLimits(every_s=10.0, burst=2, max_keys=3, total_every_s=1.0, total_burst=5)
    assert [lines.take("login 10.0.0.1", 0.0) for _ in range(4)] == [0, 0, None, None]
    assert lines.take("login 10.0.0.2", 0.0) == 0                  # another source is not hidden by the flood
    written = [lines.take(f"login 10.0.1.{i}", 0.0) for i in range(50)]
    assert sum(n is not None for n in written) == 2                 # the total bound: 5 lines in all
    assert len(lines._keys) == 3                                    # keys are bounded
    assert lines.take("login 10.0.1.49", 20.0) == 1                 # what was left out, said later


def test_a_report_goes_out_when_it_changes_and_refusals_at_most_once_a_period():
    from fogmesh.deploy.report_gate import ReportGate
    from fogmesh.deploy.reported import Report
    gate = ReportGate(every_s=5.0)
    idle = Report(agent="a1")
    assert gate.offer(idle, 0.0) == idle and gate.offer(idle.but(at=3.0), 0.1) is None    # unchanged
    refused = [idle.but(state="refused", reason="bad_signature", detail=str(i)) for i in range(3)]
    assert gate.offer(refused[0], 0.2) == refused[0]               # the first refusal at once
    assert gate.offer(refused[1], 0.3) is None and gate.offer(refused[2], 0.4) is None
    assert gate.wake_at() == 5.2 and gate.due(5.0) is None and gate.due(5.2) == refused[2]   # the latest
    assert gate.due(20.0) is None and gate.wake_at() is None
    assert gate.offer(refused[0], 6.0) is None                     # held again
    running = idle.but(state="running")
    assert gate.offer(running, 6.1) == running and gate.due(20.0) is None    # a new state at once; held dropped


# -- log lines a fault repeats -----------------------------------------------------------

def test_answers_withdrawn_in_a_burst_are_one_warning_and_the_next_says_how_many_were_left_out(caplog):
    # The audit: three identical "connection dropped with 1 answer message(s) unconfirmed" within 15 ms
    # (answers finished while the link was down are each withdrawn as they are published).
    import logging

    from fogmesh.edge_agent.events import Withdrawn
    from fogmesh.edge_agent.standing import Standing
    log = logging.LoggerAdapter(logging.getLogger("test.standing"), {})
    standing = Standing(agent_id="a1", instance="i", announcer=None, log=log, clock=lambda: 0.0,  # type: ignore[arg-type]
                        presence_period=1.0, task_filters=lambda: (), on_fatal=lambda reason, status: None)
    with caplog.at_level(logging.WARNING, logger="test.standing"):
        for now in (100.0, 100.005, 100.015):
            standing.withdrawn_seen(Withdrawn(["answer"], control=False), now)    # type: ignore[list-item]
        assert [r.getMessage() for r in caplog.records] == [
            "connection dropped with 1 answer message(s) unconfirmed: they go out again only if this agent wins "
            "their takeover (claim dispatch) or the task comes back or the broker kept no session (shared dispatch)"]
        standing.withdrawn_seen(Withdrawn(["a", "b"], control=False), 111.0)   # type: ignore[list-item]
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("connection dropped with 2 answer message(s) unconfirmed")
    assert "(and 2 more answer message(s) in 2 report(s) since the last such line)" in caplog.records[1].getMessage()
