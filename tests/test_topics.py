"""Tier 1 (pure): the topic tree."""

import pytest

from fogmesh.errors import TopicError
from fogmesh.topics import DEFAULT_ROOT, Topics, validate_publish_topic


def test_default_root_is_fog_v1():
    t = Topics()
    assert DEFAULT_ROOT == "fog/v1"
    assert t.tasks == "fog/v1/tasks"
    assert t.errors == "fog/v1/errors"
    assert t.presence("pi-1") == "fog/v1/presence/pi-1"


def test_root_override_moves_every_topic():
    t = Topics("site-a/fog")
    assert t.tasks == "site-a/fog/tasks"
    assert t.claims == "site-a/fog/claims"
    assert t.shared_tasks() == "$share/fogmesh-agents/site-a/fog/tasks"
    assert t.replies("cam-1") == "site-a/fog/replies/cam-1"


def test_presence_topic_parses_back_to_the_agent_id():
    t = Topics()
    assert t.agent_of_presence("fog/v1/presence/pi-1") == "pi-1"
    assert t.agent_of_presence("fog/v1/presence/pi-1/extra") is None
    assert t.agent_of_presence("other/presence/pi-1") is None


@pytest.mark.parametrize("root", ["", "/fog", "fog/", "fog/#", "$SYS/x"])
def test_bad_roots_are_refused(root):
    with pytest.raises(TopicError):
        Topics(root)


@pytest.mark.parametrize("agent_id", ["", "a/b", "a+", "#", "$x", "x" * 129])
def test_agent_ids_must_be_one_topic_level(agent_id):
    with pytest.raises(TopicError):
        Topics().presence(agent_id)


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "", "$SYS/broker"])
def test_publish_topics_cannot_hold_wildcards_or_dollar(topic):
    with pytest.raises(TopicError):
        validate_publish_topic(topic)


def test_topic_error_is_a_value_error():
    assert issubclass(TopicError, ValueError)


def test_the_bridge_and_doctor_topics_come_from_topics():
    t = Topics("fog/v1")
    c = Topics("fogmesh/v1")
    assert t.bridge_health("farm") == "fog/v1/bridge/farm" and t.bridge_filter == "fog/v1/bridge/+"
    assert c.site_results("farm") == "fogmesh/v1/sites/farm/results"
    assert c.site_down_prefix("farm") == "fogmesh/v1/sites/farm/down/"
    assert t.below_root("actuators/r/lamp/set") == "fog/v1/actuators/r/lamp/set"
    assert t.agent_topic("pi-1", "doctor") == "fog/v1/agents/pi-1/doctor"
    assert t.login_probe("ops", "doctor") == "fog/v1/probe/ops/doctor"
