"""Tier 1 (pure): a task may not name as its ``reply_to`` a topic where what
is published speaks for a box or steers the fabric (#37 re-audit: pi-1 sent
pi-2 tasks replying on pi-2's presence, report, pipelines and control
topics, and pi-2 published its replies there)."""

import pytest

from fogmesh.edge_agent.actions import AgentConfig, Publish
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.placement import LocalPolicy
from fogmesh.messages import Task
from fogmesh.registry import Registry
from fogmesh.topics import Topics
from tests.coreio import on_connected, on_finished, on_message

T = Topics("fog/v1")


@pytest.mark.parametrize("reply_to", ["fog/v1/presence/b", "fog/v1/deploy/reported/b", "fog/v1/pipelines/b/x",
                                      "fog/v1/agents/b/control", "fog/v1/agents/a/inbox", "fog/v1/claims",
                                      "fog/v1/tasks", "fog/v1/bridge/farm", "fog/v1/fleet/requests"])
def test_a_task_replying_on_a_topic_that_speaks_for_a_box_is_refused_not_run(reply_to):
    reg = Registry.from_entry_points()
    b = AgentCore(AgentConfig(agent_id="b", topics=T, concurrency=1), reg, policy=LocalPolicy())
    on_connected(b, 0.0, control=False)
    task = Task(id="t1", kind="echo", reply_to=reply_to, args={})
    out = on_message(b, T.agent_tasks("b"), task.encode(), "t1@b", 0.0)
    assert [a for a in out if isinstance(a, Publish) and a.topic == reply_to] == []
    assert [a for a in out if isinstance(a, Publish) and a.topic == T.errors]     # a dead letter instead
    assert [a for a in on_finished(b, "t1", 0.1, result="x") if isinstance(a, Publish) and a.topic == reply_to] == []


@pytest.mark.parametrize("reply_to", ["fog/v1/replies/sensor-7", "fog/v1/agents/b/deploy-health",
                                      "app/results/7", "fog/v1/results/x"])
def test_replies_elsewhere_are_fine(reply_to):
    assert not T.carries_identity(reply_to)
