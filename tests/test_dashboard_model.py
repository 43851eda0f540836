"""What the dashboard shows, from messages and ``now`` alone: no broker, no
browser. Each test feeds the model what would cross the broker."""

from __future__ import annotations

import orjson
import pytest

from fogmesh.announcements import Battery, Presence
from fogmesh.dashboard.model import EVENTS_KEPT, DashboardModel
from fogmesh.topics import Topics

pytestmark = pytest.mark.timeout(10)

T = Topics("fog/v1")


def presence(agent: str, ts: float, *, state: str = "online", period: float | None = 1.0,
             battery: float | None = None, done: int = 0) -> tuple[str, bytes]:
    p = Presence(agent=agent, state=state, ts=ts, capacity=2, kinds=("echo",), done=done, period=period,
                 battery=Battery(battery, False) if battery is not None else None)
    return T.presence(agent), p.encode()


def feed(model: DashboardModel, topic: str, body: object, now: float) -> None:
    model.on_message(topic, body if isinstance(body, bytes) else orjson.dumps(body), now)


def reply(task_id: str, *, status: str = "ok", tier: str = "local", total_ms: float = 3.0,
          code: str | None = None) -> dict:
    r = {"id": task_id, "status": status, "worker": "a1", "tier": tier, "ms": {"queue": 0, "run": 1, "total": total_ms}}
    if status == "error":
        r["error"] = {"code": code, "message": "it broke"}
    return r


def state_at(age: float, *, period: float | None = 1.0, state: str = "online") -> str:
    model = DashboardModel(T)
    model.on_message(*presence("a1", 100.0, period=period, state=state), now=100.0)
    return model.tick(100.0 + age)["agents"][0]["state"]


def test_an_agent_heard_within_its_period_is_shown_as_it_says():
    assert state_at(0.9) == "online"
    assert state_at(0.9, state="draining") == "draining"


def test_an_agent_silent_for_one_and_a_half_periods_is_stale():
    assert state_at(2.1) == "stale"


def test_an_agent_silent_for_three_periods_is_offline_as_its_peers_judge_it():
    assert state_at(3.1) == "offline"


def test_a_last_will_shows_offline_at_once():
    assert state_at(0.0, state="offline") == "offline"


def test_an_agent_that_does_not_say_its_period_is_judged_by_the_default_five_seconds():
    assert state_at(6.0, period=None) == "online"
    assert state_at(16.0, period=None) == "offline"


def test_the_state_rule_is_a_pure_function_of_the_presence_and_the_time():
    p = Presence(agent="a1", state="degraded", ts=100.0, period=2.0)
    assert p.state_at(101.0) == "degraded" and p.state_at(107.0) == "offline"
    assert p.state_at(100.0 - 301.0) == "stale"            # a ts far ahead of the reader's clock is not believed


def test_the_chart_window_never_holds_more_than_its_points():
    model = DashboardModel(T, tick_s=1.0, window_s=30.0)
    for i in range(500):
        model.tick(float(i))
    assert model.points == 30
    assert len(model.history) == 30
    assert model.hello()["history"][-1]["ts"] == 499.0


def test_tasks_in_and_replies_are_counted_per_second():
    model = DashboardModel(T)
    model.tick(10.0)
    for i in range(6):
        feed(model, T.tasks, {"id": f"t{i}", "kind": "echo", "reply_to": "fog/v1/replies/me"}, 10.2)
    for i in range(4):
        feed(model, T.replies("me"), reply(f"t{i}"), 10.5)
    point = model.tick(12.0)["point"]
    assert point["tasks_per_s"] == 3.0
    assert point["replies_per_s"] == 2.0


def test_reply_latency_is_measured_from_the_task_seen_to_its_reply_seen():
    model = DashboardModel(T)
    for i in range(100):
        feed(model, T.tasks, {"id": f"t{i}", "kind": "echo", "reply_to": "fog/v1/replies/me"}, 50.0)
        feed(model, T.replies("me"), reply(f"t{i}"), 50.0 + (i + 1) / 1000)
    point = model.tick(51.0)["point"]
    assert point["p50_ms"] == pytest.approx(50.0, abs=1.5)
    assert point["p99_ms"] == pytest.approx(99.0, abs=1.5)


def test_a_reply_whose_task_was_not_seen_counts_the_agents_own_time():
    model = DashboardModel(T)
    feed(model, T.replies("me"), reply("unseen", total_ms=42.0), 5.0)
    assert model.tick(5.5)["point"]["p50_ms"] == 42.0


def test_a_duplicate_reply_counts_as_a_reply_but_not_twice_as_a_latency_from_the_task():
    model = DashboardModel(T)
    feed(model, T.tasks, {"id": "t", "kind": "echo", "reply_to": "fog/v1/replies/me"}, 1.0)
    feed(model, T.replies("me"), reply("t", total_ms=999.0), 1.010)
    feed(model, T.replies("me"), reply("t", total_ms=999.0), 1.020)
    point = model.tick(1.5)["point"]
    assert point["p50_ms"] == pytest.approx(10.0, abs=0.5)


def test_latency_percentiles_cover_only_the_last_seconds():
    model = DashboardModel(T)
    feed(model, T.replies("me"), reply("old", total_ms=500.0), 1.0)
    assert model.tick(20.0)["point"]["p50_ms"] is None


def test_tasks_awaiting_a_reply_are_bounded_the_oldest_forgotten_first():
    model = DashboardModel(T, pending_kept=100)
    for i in range(1000):
        feed(model, T.tasks, {"id": f"t{i}", "kind": "echo", "reply_to": "r"}, 1.0)
    feed(model, T.replies("me"), reply("t0", total_ms=7.0), 1.5)   # forgotten: the agent's own time counts
    assert model.tick(2.0)["point"]["p50_ms"] == 7.0                # (remembered, it would be 500 ms)


def test_dead_letters_and_error_replies_are_listed_newest_first():
    model = DashboardModel(T)
    feed(model, T.errors, {"agent": "a1", "ts": 1.0, "error": {"code": "bad_json", "message": "not JSON"},
                           "topic": T.tasks, "id": None, "excerpt": "{"}, 1.0)
    feed(model, T.replies("me"), reply("t9", status="error", code="unknown_kind"), 2.0)
    events = model.tick(3.0)["events"]
    assert [(e["kind"], e["code"], e["task"]) for e in events] == [
        ("error reply", "unknown_kind", "t9"), ("dead letter", "bad_json", None)]


def test_the_event_list_keeps_only_the_newest():
    model = DashboardModel(T)
    for i in range(EVENTS_KEPT + 30):
        feed(model, T.replies("me"), reply(f"t{i}", status="error", code="busy"), float(i))
    events = model.tick(100.0)["events"]
    assert len(events) == EVENTS_KEPT
    assert events[0]["task"] == f"t{EVENTS_KEPT + 29}"


def test_garbage_on_any_topic_is_ignored_but_a_malformed_task_still_counts_as_a_task_in():
    model = DashboardModel(T)
    for topic in (T.presence("x"), T.errors, T.replies("me"), T.actuator_state("d", "a"), T.bridge_health("s"),
                  T.pipeline_status("a1", "p")):
        model.on_message(topic, b"\xff not json", 1.0)
    model.on_message(T.tasks, b'{"id": ', 1.0)
    tick = model.tick(2.0)
    assert tick["point"]["tasks_per_s"] == 1.0
    assert tick["agents"] == [] and tick["actuators"] == [] and tick["events"] == []


def test_actuators_show_their_retained_state_and_vanish_when_it_is_cleared():
    model = DashboardModel(T)
    feed(model, T.actuator_state("relay-1", "lamp"), {"state": "on", "device": "relay-1", "actuator": "lamp",
                                                      "ts": 5.0}, 5.0)
    assert [(a["device"], a["actuator"], a["state"]) for a in model.tick(6.0)["actuators"]] == [
        ("relay-1", "lamp", "on")]
    model.on_message(T.actuator_state("relay-1", "lamp"), b"", 7.0)
    assert model.tick(8.0)["actuators"] == []


def test_devices_are_counted_from_their_own_task_topics_and_the_device_field():
    model = DashboardModel(T)
    feed(model, T.device_tasks("sensor-7"), {"id": "a", "kind": "echo", "reply_to": "r"}, 1.0)
    feed(model, T.tasks, {"id": "b", "kind": "echo", "reply_to": "r", "device": "cam-1"}, 1.0)
    feed(model, T.tasks, {"id": "c", "kind": "echo", "reply_to": "r"}, 1.0)
    assert model.tick(2.0)["flows"]["devices"] == 2


def test_replies_from_a_neighbour_and_from_the_cloud_are_the_offload_and_uplink_flows():
    model = DashboardModel(T)
    model.tick(0.0)
    for i in range(3):
        feed(model, T.replies("me"), reply(f"f{i}", tier="fog"), 0.5)
    feed(model, T.replies("me"), reply("c", tier="cloud"), 0.5)
    flows = model.tick(1.0)["flows"]
    assert (flows["offloads_per_s"], flows["cloud_per_s"]) == (3.0, 1.0)


def test_batteries_of_live_agents_are_charted_and_offline_ones_leave_the_chart():
    model = DashboardModel(T)
    model.on_message(*presence("a1", 10.0, battery=81.0), now=10.0)
    model.on_message(*presence("a2", 10.0, battery=34.0, state="offline"), now=10.0)
    assert model.tick(10.5)["point"]["battery"] == {"a1": 81.0}


def test_the_model_subscribes_to_everything_it_shows():
    filters = DashboardModel(T).filters
    for f in (T.presence_filter, T.bridge_filter, T.tasks, T.device_tasks_filter, T.errors, T.replies_filter,
              T.actuator_state_filter):
        assert f in filters


def test_a_pipeline_shows_its_last_decision_and_its_latency():
    model = DashboardModel(T)
    feed(model, T.pipeline_status("a1", "deterrent"), {"frames": 12, "submitted": 10, "processed": 9, "skipped": 2,
                                                        "failed": 0, "actuations": 1, "last_latency_ms": 181.0,
                                                        "last_decision": "no action", "last_decision_ms": 95.5,
                                                        "in_flight": 1, "agent": "a1"}, 1.0)
    [row] = model.tick(2.0)["pipelines"]
    assert (row["pipeline"], row["last_decision"], row["last_decision_ms"]) == ("a1/deterrent", "no action", 95.5)
