"""Tier 1 (pure): the message schema and its validation."""

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogmesh.announcements import Presence
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Limits, Reply, Task, Timing, parse_task


def payload(**fields):
    base = {"id": "t1", "kind": "echo", "reply_to": "fog/v1/replies/dev"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def code_of(data, **kw):
    with pytest.raises(InvalidMessage) as info:
        parse_task(data, **kw)
    return info.value


def test_minimal_task_parses_with_empty_args():
    task = parse_task(payload())
    assert task == Task(id="t1", kind="echo", reply_to="fog/v1/replies/dev", args={})


def test_all_optional_fields_parse():
    task = parse_task(payload(args={"x": 1}, weight="heavy", deadline_ms=500, device="cam-1"))
    assert (task.weight, task.deadline_ms, task.device, task.args) == ("heavy", 500, "cam-1", {"x": 1})


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert parse_task(payload(future_field=True)).id == "t1"


def test_malformed_json_is_bad_json_with_nothing_salvaged():
    err = code_of(b"{not json")
    assert (err.code, err.task_id, err.reply_to) == ("bad_json", None, None)


def test_non_object_json_is_not_object():
    assert code_of(b"[1, 2]").code == "not_object"


def test_missing_reply_to_keeps_the_id_for_the_dead_letter():
    err = code_of(payload(reply_to=...))
    assert (err.code, err.task_id, err.reply_to) == ("missing_field", "t1", None)


def test_missing_kind_can_still_be_answered_on_reply_to():
    err = code_of(payload(kind=...))
    assert (err.code, err.reply_to) == ("missing_field", "fog/v1/replies/dev")


@pytest.mark.parametrize("fields", [
    {"id": ""}, {"id": "x" * 129}, {"id": 7}, {"kind": 3}, {"args": [1]},
    {"weight": "enormous"}, {"deadline_ms": -1}, {"deadline_ms": True}, {"reply_to": "a/#"},
])
def test_bad_fields_are_refused(fields):
    assert code_of(payload(**fields)).code == "bad_field"


def test_oversize_payload_is_too_large_but_still_answerable():
    big = payload(args={"blob": "x" * 2000})
    err = code_of(big, limits=Limits(max_payload=1000))
    assert (err.code, err.task_id, err.reply_to) == ("too_large", "t1", "fog/v1/replies/dev")


def test_hugely_oversize_payload_is_not_even_parsed():
    big = payload(args={"blob": "x" * 20000})
    err = code_of(big, limits=Limits(max_payload=1000))
    assert (err.code, err.reply_to) == ("too_large", None)


def test_reply_round_trips_through_json():
    r = Reply.ok("t1", {"v": 1}, worker="a1", ms=Timing(1, 2, 3))
    back = Reply.decode(r.encode())
    assert back == Reply.ok("t1", {"v": 1}, worker="a1", ms=Timing(1.0, 2.0, 3.0))


def test_error_reply_has_code_and_message_and_no_result():
    d = orjson.loads(Reply.failed("t1", "timeout", "too slow", worker="a1").encode())
    assert d["status"] == "error" and d["error"] == {"code": "timeout", "message": "too slow"}
    assert "result" not in d
    assert set(d) == {"id", "status", "error", "worker", "tier", "ms"}


def test_presence_carries_the_contract_fields():
    d = orjson.loads(Presence(agent="a1", state="online", ts=1.0).encode())
    assert {"agent", "state", "ts", "cpu", "mem", "load", "queue", "capacity", "kinds",
            "battery"} <= set(d)
    assert Presence.from_dict(d).agent == "a1"


def test_presence_and_claims_carry_the_epoch_only_once_there_is_one():
    from fogmesh.claims import Claim
    assert "epoch" not in orjson.loads(Presence(agent="a1", state="online", ts=1.0).encode())
    assert Presence.from_dict(orjson.loads(Presence(agent="a1", state="online", ts=1.0, epoch=2).encode())).epoch == 2
    assert Claim.decode(Claim("k", "a1", epoch=3).encode()).epoch == 3
    assert Claim.decode(b'{"task": "k", "agent": "a1", "epoch": "x"}').epoch is None     # ignored, not refused


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
                           max_leaves=10)


@given(task_id=st.text(min_size=1, max_size=128), kind=st.text(min_size=1, max_size=64),
       args=st.dictionaries(st.text(), json_values, max_size=4))
def test_any_valid_task_survives_encode_and_parse(task_id, kind, args):
    task = Task(id=task_id, kind=kind, reply_to="r/x", args=args)
    assert parse_task(task.encode()) == task


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_invalid_message(data):
    try:
        parse_task(data)
    except InvalidMessage:
        pass


def test_bridge_health_round_trips_and_its_will_carries_no_figures():
    from fogmesh.announcements import BridgeHealth
    h = BridgeHealth(site="farm", agent="bridge-farm", state="online", ts=5.0, link="up", kinds=("sha256",),
                     backlog=3, backlog_bytes=300, oldest_age_s=1.5, cloud_workers=2, bytes_in=10, bytes_up=4)
    assert BridgeHealth.decode(h.encode()) == h
    will = BridgeHealth(site="farm", agent="bridge-farm", state="offline", ts=5.0, kinds=("sha256",)).to_dict()
    assert set(will) == {"site", "agent", "state", "link", "ts", "kinds"} and will["link"] == "down"


@pytest.mark.parametrize("body", [{"site": "farm", "state": "online"}, {"site": "farm", "agent": "b", "state": "on"},
                                  {"site": "farm", "agent": "b", "state": "online", "backlog": "many"}, [1]])
def test_malformed_bridge_health_is_refused(body):
    from fogmesh.announcements import BridgeHealth
    with pytest.raises(InvalidMessage):
        BridgeHealth.from_dict(body)
