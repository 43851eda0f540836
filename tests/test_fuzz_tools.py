"""Tier 1 (pure), fuzzing: the operator's tools (the dashboard's model, the
fleet rows behind ``fogmesh monitor``, ``fogmesh deploy status``) survive
hostile announcements, take each box's identity from its topic and track a
bounded number of boxes (issue #37)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogmesh.dashboard.model import DashboardModel
from fogmesh.deploy.commands import status
from fogmesh.deploy.operator import Operator
from fogmesh.fleet import MAX_BOXES, FleetView
from fogmesh.monitor import render
from fogmesh.mqtt import Message
from fogmesh.topics import Topics
from tests.fuzzing import FUZZ, ROOT, VALID, catalogue, dumps, forged_presence, messages

T = Topics(ROOT)


def received(topic: str, payload: bytes) -> Message:
    return Message(topic, payload, qos=1, retain=True, mid=1, generation=1)


def presence(agent: str, **fields) -> bytes:
    return dumps(dict(VALID["presence"], agent=agent, **fields))


def report(agent: str, **fields) -> bytes:
    return dumps(dict(VALID["report"], agent=agent, **fields))


# -- row 2: a retained deployment report with the wrong type --------------------------------------
@pytest.mark.parametrize("bundles", ["plantcare 1.0", 1.5, ["plantcare"], {"plantcare": "1.0"}, {"b": None}])
def test_a_report_whose_bundles_is_not_an_object_of_objects_is_refused_and_the_rows_still_come(bundles):
    """Found from outside: ``"bundles": 1.5`` froze every dashboard (its update
    thread died in fleet.py) and made ``fogmesh monitor --once`` exit 1."""
    view = FleetView(T)
    view.on_message(T.deploy_reported("pi-1"), report("pi-1", bundles=bundles))
    view.on_message(T.deploy_reported("pi-2"), report("pi-2"))
    rows = view.rows(0.0)
    assert [d["agent"] for d in rows["deployments"]] == ["pi-2"]
    assert view.refusals.by_kind == {"report": 1}
    render(rows, title="t")                       # what monitor draws


def test_the_dashboard_keeps_ticking_through_a_retained_bad_report():
    model = DashboardModel(T)
    model.on_message(T.presence("pi-1"), presence("pi-1", ts=100.0), 100.0)
    model.on_message(T.deploy_reported("pi-1"), report("pi-1", bundles=1.5), 100.0)
    tick = model.tick(101.0)
    assert [a["agent"] for a in tick["agents"]] == ["pi-1"] and tick["deployments"] == []
    assert model.refusals.due(101.0) is not None and model.refusals.due(102.0) is None   # said once


def test_deploy_status_reads_through_a_malformed_report(monkeypatch):
    op = Operator("mqtt://127.0.0.1:1", root=ROOT)
    monkeypatch.setattr(op, "watch", lambda **_: None)       # the messages come from the test, below
    for topic, payload in [(T.deploy_reported("pi-1"), report("pi-1", bundles=1.5)),
                           (T.deploy_reported("pi-2"), report("pi-2")),
                           (T.presence("pi-2"), presence("pi-2")),
                           (T.deploy_history(3), b'{"serial": 3, "bundles": "x"}')]:
        op._on_message(received(topic, payload))
    said: list[str] = []
    out = status(op, None, said.append)
    assert list(out["reports"]) == ["pi-2"] and op.history == {}
    assert any("refused 2" in line for line in said)


# -- row 3: a box speaks only for itself, and the boxes tracked are bounded ---------------------------
def test_a_presence_that_says_another_agent_adds_no_row_to_any_tool():
    """Found from outside: pi-1's login published on its own topic documents
    saying "pi-2" and 1,000 made-up names: the dashboard showed 1,004 rows."""
    view, model = FleetView(T), DashboardModel(T)
    for target in (view, model):
        feed = target.on_message if target is view else (lambda t, p: model.on_message(t, p, 0.0))
        feed(T.presence("pi-1"), presence("pi-1", ts=0.0))
        feed(T.presence("pi-2"), presence("pi-2", ts=0.0, cpu=5.0))
        feed(T.presence("pi-1"), forged_presence("pi-1", "pi-2"))
        for i in range(1000):
            feed(T.presence("pi-1"), forged_presence("pi-1", f"made-up-{i}"))
    assert [a["agent"] for a in view.rows(1.0)["agents"]] == ["pi-1", "pi-2"]
    assert view.agents["pi-2"].cpu == 5.0                       # not overwritten by the forgery
    tick = model.tick(1.0)
    assert [a["agent"] for a in tick["agents"]] == ["pi-1", "pi-2"]
    assert len(orjson.dumps(tick)) < 16_000
    assert view.refusals.total == 1001


@pytest.mark.parametrize("kind", ["bridge", "pipeline", "report"])
def test_a_bridge_pipeline_or_report_that_speaks_for_another_box_is_refused(kind):
    view = FleetView(T)
    topic, payload = {
        "bridge": (T.bridge_health("farm"), dumps(dict(VALID["bridge"], agent="pi-2"))),
        "pipeline": (T.pipeline_status("pi-1", "deter"), dumps(dict(VALID["pipeline"], agent="pi-2"))),
        "report": (T.deploy_reported("pi-1"), report("pi-2")),
    }[kind]
    view.on_message(topic, payload)
    rows = view.rows(0.0)
    assert rows["bridges"] == rows["pipelines"] == rows["deployments"] == []
    assert view.refusals.by_kind == {kind: 1}


def test_the_agents_a_tool_tracks_are_bounded_and_a_real_newcomer_still_gets_a_row():
    view = FleetView(T)
    view.on_message(T.presence("gone"), presence("gone", state="offline"))
    for i in range(MAX_BOXES + 200):
        view.on_message(T.presence(f"made-up-{i}"), presence(f"made-up-{i}"))
    assert len(view.agents) == MAX_BOXES and "gone" not in view.agents       # the offline one went first
    view.on_message(T.presence("pi-9"), presence("pi-9"))
    assert "pi-9" in view.agents and len(view.agents) == MAX_BOXES and len(view._rates) <= MAX_BOXES


NOW = 1795000000.0
REAL = ("pi-1", "pi-2", "pi-3")


def replay(feed, *, fakes: int = 150, ts: float) -> None:
    """What a broker sends a new subscriber: every retained presence and
    report, the real boxes' first, then ``fakes`` made-up ones (ids that
    never connect, published retained once by a hostile login)."""
    for agent in REAL:
        feed(T.presence(agent), presence(agent, ts=NOW - 2), True)
        feed(T.deploy_reported(agent), report(agent), True)
    for i in range(fakes):
        feed(T.presence(f"fake-{i}"), presence(f"fake-{i}", ts=ts), True)
        feed(T.deploy_reported(f"fake-{i}"), report(f"fake-{i}"), True)


SMALL = 100           # the bound of the views below: what holds at 1,000 holds at 100, faster


def fleet_feed(view: FleetView):
    return lambda topic, payload, retained: view.on_message(topic, payload, retained=retained, now=NOW)


def test_retained_boxes_that_never_connect_do_not_evict_real_ones_from_monitor_rows():
    """Found from outside: past the bound (1,000), made-up retained presences
    and reports pushed the real boxes out of ``fogmesh monitor``'s tables.
    Retained ones whose presence is stale (never renewed) go first."""
    view = FleetView(T, max_boxes=SMALL)
    replay(fleet_feed(view), ts=NOW - 3600)
    rows = view.rows(NOW)
    assert {a["agent"] for a in rows["agents"]} >= set(REAL) and len(rows["agents"]) == SMALL
    assert {d["agent"] for d in rows["deployments"]} >= set(REAL) and len(rows["deployments"]) == SMALL


@pytest.mark.parametrize("tool", ["monitor", "dashboard"])
def test_boxes_heard_live_are_kept_over_retained_only_ones_however_fresh(tool):
    """Made-up retained presences kept fresh: the real boxes, once heard live
    (an announcement that is not a replay), are kept through the next replay
    (the tool's reconnection)."""
    view = FleetView(T, max_boxes=SMALL)
    feed = fleet_feed(view)
    if tool == "dashboard":
        model = DashboardModel(T)
        model.fleet = view
        feed = lambda topic, payload, retained: model.on_message(topic, payload, NOW, retained=retained)  # noqa: E731
    replay(feed, ts=NOW - 1)
    for agent in REAL:
        feed(T.presence(agent), presence(agent, ts=NOW), False)
    replay(feed, ts=NOW - 1)
    rows = view.rows(NOW)
    assert {a["agent"] for a in rows["agents"]} >= set(REAL) and len(rows["agents"]) == SMALL
    assert {d["agent"] for d in rows["deployments"]} >= set(REAL)


def test_deploy_status_keeps_the_reports_of_real_agents_past_the_bound(monkeypatch):
    op = Operator("mqtt://127.0.0.1:1", root=ROOT, wall_clock=lambda: NOW)
    monkeypatch.setattr(op, "watch", lambda **_: None)
    feed = lambda topic, payload, retained: op._on_message(   # noqa: E731
        Message(topic, payload, qos=1, retain=retained, mid=1, generation=1))
    replay(feed, fakes=MAX_BOXES + 500, ts=NOW - 3600)            # a one-shot reading: the replay alone
    assert set(status(op, None, lambda line: None)["reports"]) >= set(REAL)
    for agent in REAL:
        feed(T.presence(agent), presence(agent, ts=NOW), False)
    replay(feed, fakes=MAX_BOXES + 500, ts=NOW - 1)               # fresh fakes, the tool's reconnection
    out = status(op, None, lambda line: None)
    assert set(out["reports"]) >= set(REAL) and len(out["reports"]) <= MAX_BOXES
    assert all(op.presence.get(a) == "online" for a in REAL)


def test_a_cleared_retained_announcement_removes_its_row():
    view = FleetView(T)
    view.on_message(T.presence("pi-1"), presence("pi-1"))
    view.on_message(T.deploy_reported("pi-1"), report("pi-1"))
    view.on_message(T.presence("pi-1"), b"")
    view.on_message(T.deploy_reported("pi-1"), b"")
    assert view.agents == {} and view.deployments == {}


# -- presence: bounded figures, one meaning of "online" -----------------------------------------------
@pytest.mark.parametrize("field, value", [("period", 1e-9), ("period", 9e15), ("period", 0.0), ("ts", 9e15),
                                          ("ts", -1.0), ("since", 9e15)])
def test_a_presence_whose_period_or_time_is_out_of_bounds_is_refused(field, value):
    """Found from outside: ``period`` 1e-9 or 9e15 and ``ts`` 9e15 were taken,
    so a made-up box could be shown online for ever (or flap)."""
    view = FleetView(T)
    view.on_message(T.presence("pi-1"), presence("pi-1", **{field: value}))
    assert view.agents == {} and view.refusals.by_kind == {"presence": 1}


@pytest.mark.parametrize("period", [None, 0.3, 1.0, 5.0, 60.0, 3600.0])
@pytest.mark.parametrize("says", ["online", "draining", "degraded", "offline"])
def test_monitor_and_dashboard_show_an_agent_the_same_way_at_every_age(period, says):
    """Found from outside: the monitor showed "online" an agent the dashboard
    showed "stale" or "offline" (15 s against 1.5 and 3 periods)."""
    for age in (0.0, 1.0, 2.0, 8.0, 20.0, 50.0, 9_000.0, 20_000.0, -10.0, -1_000.0):
        view, model = FleetView(T), DashboardModel(T)
        payload = presence("pi-1", ts=NOW, state=says, period=period)
        view.on_message(T.presence("pi-1"), payload, now=NOW)
        model.on_message(T.presence("pi-1"), payload, NOW)
        (row,) = view.rows(NOW + age)["agents"]
        (shown,) = model.tick(NOW + age)["agents"]
        assert row["state"] == shown["state"], (age, row["state"], shown["state"])


# -- every topic, every hostile payload ------------------------------------------------------------------
def test_the_catalogue_of_hostile_input_never_raises_out_of_the_dashboard_or_the_fleet_rows():
    model = DashboardModel(T)
    model.on_message(T.presence("pi-1"), presence("pi-1", ts=0.0), 0.0)
    announcements = ("/presence/", "/bridge/", "/pipelines/", "/deploy/reported/", "/actuators/", "/audit/")
    for i, (topic, payload) in enumerate(catalogue()):
        model.on_message(topic, payload, i * 0.001)
        if any(a in topic for a in announcements):      # what the page gets, after each of them
            orjson.dumps(model.tick(i * 0.001))
    tick = model.tick(10.0)
    render(model.fleet.rows(10.0), title="t")
    assert len(orjson.dumps(tick)) < 200_000


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=20))
def test_no_hostile_message_raises_out_of_the_dashboard_monitor_or_deploy_status(sequence):
    model = DashboardModel(T)
    op = Operator("mqtt://127.0.0.1:1", root=ROOT)
    op.watch = lambda **_: None
    for i, (topic, payload) in enumerate(sequence):
        model.on_message(topic, payload, float(i))
        op._on_message(received(topic, payload))
    orjson.dumps(model.tick(float(len(sequence))))
    render(model.fleet.rows(0.0), title="t")
    orjson.dumps(status(op, None, lambda line: None))
