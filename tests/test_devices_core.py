"""Tier 1 (pure): the device-side contract without sockets or pins: actuator
commands, pin specs, the frame format, sensor models, and pipeline decisions."""

import random

import orjson
import pytest

from fogmesh.devices.commands import parse_command
from fogmesh.devices.gpio import parse_pins
from fogmesh.devices.sensors import Motion, Temperature, make_models
from fogmesh.devices.streams import parse_rate
from fogmesh.edge_agent.pipelines import Actuation, PipelineCore, PipelineSpec, Rule, load_pipelines
from fogmesh.errors import InvalidMessage
from fogmesh.frames import FrameHeader, decode_frame, encode_frame
from fogmesh.messages import Reply
from fogmesh.topics import Topics

T = Topics("t")


# -- actuator commands ------------------------------------------------------------
@pytest.mark.parametrize("payload,op,ms", [(b"on", "on", 0), (b" OFF\n", "off", 0), (b"toggle", "toggle", 0),
                                           (b'{"op": "pulse", "ms": 3000}', "pulse", 3000),
                                           (b'{"op": "on", "ms": 5}', "on", 0)])
def test_commands_are_json_or_a_bare_word(payload, op, ms):
    c = parse_command("relay", payload)
    assert (c.op, c.ms) == (op, ms)


@pytest.mark.parametrize("payload,fragment", [
    (b'{"op": "explode"}', "op must be one of"),
    (b'{"op": "pulse"}', "positive whole number"),
    (b'{"op": "pulse", "ms": -5}', "positive whole number"),
    (b'{"op": "pulse", "ms": 2.5}', "positive whole number"),
    (b'{"op": "pulse", "ms": 999999}', "longer than this actuator allows"),
    (b'[1, 2]', "a command is"),
])
def test_bad_commands_are_refused_with_a_reason(payload, fragment):
    with pytest.raises(InvalidMessage) as info:
        parse_command("relay", payload, max_pulse_ms=60_000)
    assert fragment in info.value.message


def test_a_refused_command_keeps_its_id_and_reply_topic_for_the_answer():
    with pytest.raises(InvalidMessage) as info:
        parse_command("relay", b'{"op": "nope", "id": "c1", "reply_to": "t/replies/x"}')
    assert (info.value.code, info.value.task_id, info.value.reply_to) == ("bad_command", "c1", "t/replies/x")


def test_malformed_json_is_bad_json():
    with pytest.raises(InvalidMessage) as info:
        parse_command("relay", b"{nope")
    assert info.value.code == "bad_json"


def test_pin_specs_name_kind_pin_and_options():
    a, b = parse_pins("deterrent=relay:17,lamp=led:GPIO27:active_low:safe=on:max_pulse_ms=500")
    assert (a.name, a.kind, a.pin, a.active_high, a.safe) == ("deterrent", "relay", "17", True, "off")
    assert (b.pin, b.active_high, b.safe, b.max_pulse_ms) == ("GPIO27", False, "on", 500)


@pytest.mark.parametrize("spec", ["x=motor:3", "x=relay", "=relay:3", "a=relay:1,a=led:2", "a=relay:1:fast"])
def test_bad_pin_specs_say_how_to_write_them(spec):
    with pytest.raises(ValueError):
        parse_pins(spec)


# -- frames, sensors, control --------------------------------------------------------
def test_a_frame_is_a_json_header_line_then_the_raw_image():
    header = FrameHeader("cam", "camera", 7, 12.5, 320, 240)
    payload = encode_frame(header, b"\xff\xd8binary\n\x00jpeg")
    head, _, _ = payload.partition(b"\n")
    assert orjson.loads(head)["seq"] == 7
    assert decode_frame(payload) == (header, b"\xff\xd8binary\n\x00jpeg")


@pytest.mark.parametrize("payload", [b"no newline at all", b'{"seq": 1}\nxx', b"not json\nxx"])
def test_payloads_that_are_not_frames_are_refused(payload):
    with pytest.raises(InvalidMessage):
        decode_frame(payload)


def test_sensor_models_are_deterministic_by_seed():
    t = Temperature()
    assert [t.value(100.0, random.Random(1)) for _ in range(3)] == [t.value(100.0, random.Random(1))] * 3
    motion = [Motion(rate=30).value(0.0, random.Random(5)) for _ in range(1)]
    assert motion[0] in (0.0, 1.0)
    with pytest.raises(ValueError, match="known"):
        make_models(["temperature", "sonar"])


@pytest.mark.parametrize("payload,hz", [(b'{"op": "rate", "hz": 2}', 2.0), (b'{"op": "rate", "hz": 0}', 0.0)])
def test_rate_control(payload, hz):
    assert parse_rate(payload) == hz


@pytest.mark.parametrize("payload", [b'{"op": "rate", "hz": -1}', b'{"op": "rate"}', b'{"op": "speed", "hz": 1}',
                                     b'{"op": "rate", "hz": 1000}'])
def test_bad_rate_controls_are_refused(payload):
    with pytest.raises(InvalidMessage):
        parse_rate(payload)


# -- pipelines -------------------------------------------------------------------------
def spec(**kw):
    base = dict(name="deter", device="cam", sensor="camera", kind="motion", when=Rule("moving"),
                then=Actuation("relay", "deterrent", "pulse", 3000), max_age_ms=2000, max_in_flight=2)
    base.update(kw)
    return PipelineSpec(**base)


def core(**kw):
    return PipelineCore(spec(**kw), topics=T, reply_to="t/replies/p", run_tag="r1")


def ok(task_id, **result):
    return Reply.ok(task_id, result, worker="a1")


def test_motion_tasks_carry_the_previous_and_the_current_frame():
    c = core()
    assert c.on_frame(10.0, b"f1", 10.1) == []             # needs two frames
    (submit,) = c.on_frame(10.5, b"f2", 10.6)
    assert submit.task.kind == "motion" and len(submit.task.args["frames"]) == 2
    assert submit.task.deadline_ms == 1900                 # what is left of max_age_ms


def test_a_frame_older_than_max_age_is_skipped_not_queued():
    c = core(kind="detect", when=Rule("found"))
    assert c.on_frame(10.0, b"f", 12.5) == []
    assert (c.stats.frames, c.stats.skipped, c.stats.submitted) == (1, 1, 0)


def test_frames_beyond_the_in_flight_limit_are_skipped():
    c = core(kind="detect", when=Rule("found"))
    for i in range(4):
        c.on_frame(10.0 + i, b"f", 10.0 + i)
    assert (c.stats.submitted, c.stats.skipped, c.in_flight) == (2, 2, 2)


def test_a_result_that_meets_the_rule_becomes_one_actuator_command():
    c = core(kind="detect", when=Rule("count", min=1))
    (s,) = c.on_frame(10.0, b"f", 10.0)
    (cmd,) = c.on_reply(ok(s.task.id, count=2), 10.25)
    assert cmd.topic == T.actuator_set("relay", "deterrent")
    assert orjson.loads(cmd.payload)["op"] == "pulse" and cmd.latency_ms == 250.0
    assert c.on_reply(ok(s.task.id, count=2), 10.3) == []   # a duplicate reply: nothing more


def test_a_result_that_misses_the_rule_commands_nothing():
    c = core(kind="detect", when=Rule("count", min=1))
    (s,) = c.on_frame(10.0, b"f", 10.0)
    assert c.on_reply(ok(s.task.id, count=0), 10.2) == [] and c.stats.processed == 1


def test_the_cooldown_holds_back_a_second_command():
    c = core(kind="detect", when=Rule("found"), cooldown_ms=3000, max_in_flight=5)
    ids = [c.on_frame(10.0 + i, b"f", 10.0 + i)[0].task.id for i in range(2)]
    assert len(c.on_reply(ok(ids[0], found=True), 10.1)) == 1
    assert c.on_reply(ok(ids[1], found=True), 11.1) == []


def test_the_last_decision_and_its_latency_are_kept_for_the_dashboard():
    c = core(kind="detect", when=Rule("found"), cooldown_ms=3000, max_in_flight=5)
    ids = [c.on_frame(10.0 + i, b"f", 10.0 + i)[0].task.id for i in range(4)]
    decisions = []
    for task_id, result, at in ((ids[0], ok(ids[0], found=False), 10.2), (ids[1], ok(ids[1], found=True), 11.1),
                                (ids[2], ok(ids[2], found=True), 12.3),
                                (ids[3], Reply.failed(ids[3], "worker_lost", "gone", worker="a1"), 13.4)):
        c.on_reply(result, at)
        decisions.append((c.stats.last_decision, c.stats.last_decision_ms))
    assert decisions == [("no action", 200.0), ("fired", 100.0), ("cooldown", 300.0), ("worker_lost", 400.0)]


def test_deadline_errors_count_as_skipped_frames():
    c = core(kind="detect", when=Rule("found"))
    (s,) = c.on_frame(10.0, b"f", 10.0)
    c.on_reply(Reply.failed(s.task.id, "deadline_exceeded", "late", worker="a1"), 12.0)
    assert (c.stats.skipped, c.stats.failed) == (1, 0)


def test_lost_tasks_free_the_in_flight_limit():
    c = core(kind="detect", when=Rule("found"), max_in_flight=1)
    c.on_frame(10.0, b"f", 10.0)
    c.expire(100.0)
    assert c.in_flight == 0 and c.stats.skipped == 1


def test_pipeline_files_are_read_and_checked(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[pipeline]]\nname = "d"\nsource = "cam/camera"\nkind = "detect"\n'
                 'when = {field = "count", min = 1}\nthen = {actuator = "relay/deterrent", op = "pulse", ms = 3000}\n')
    (p,) = load_pipelines(f)
    assert (p.device, p.sensor, p.then.actuator, p.when.min) == ("cam", "camera", "deterrent", 1)
    f.write_text('[[pipeline]]\nname = "d"\nsource = "cam"\nkind = "detect"\nwhen = {}\nthen = {}\n')
    with pytest.raises(ValueError, match="DEVICE/CAMERA"):
        load_pipelines(f)


# -- triggers (the PIR wakes the camera) ---------------------------------------------------
def trigger():
    from fogmesh.edge_agent.triggers import TriggerCore, TriggerSpec
    spec = TriggerSpec("wake", "pir", "motion", Rule("value", min=1), camera="cam", hz=2, for_s=30)
    return TriggerCore(spec, topics=T)


def test_motion_raises_the_camera_rate_once_and_idles_it_after_the_quiet_period():
    t = trigger()
    assert t.on_reading(b'{"value": 0}', 0.0) == []
    (topic, payload), = t.on_reading(b'{"value": 1, "unit": "bool"}', 1.0)
    assert topic == T.sensor_control("cam") and orjson.loads(payload) == {"op": "rate", "hz": 2}
    assert t.on_reading(b"1", 20.0) == []               # still active: the window is extended
    assert t.on_tick(49.0) == []
    (topic, payload), = t.on_tick(50.0)
    assert orjson.loads(payload) == {"op": "rate", "hz": 0.0}
    assert t.on_tick(60.0) == [] and t.fired == 1


def test_garbage_readings_trigger_nothing():
    t = trigger()
    assert t.on_reading(b"{nope", 0.0) == [] and t.on_reading(b'"motion"', 0.0) == []


def test_trigger_tables_are_read_from_the_pipeline_file(tmp_path):
    from fogmesh.edge_agent.triggers import load_triggers
    f = tmp_path / "p.toml"
    f.write_text('[[trigger]]\nname = "w"\nsource = "pir/motion"\nthen = {camera = "cam", hz = 5}\n')
    (spec,) = load_triggers(f)
    assert (spec.device, spec.sensor, spec.camera, spec.hz, spec.for_s) == ("pir", "motion", "cam", 5.0, 30.0)
    assert load_pipelines(f) == []                       # a file of triggers only is fine
    f.write_text('[[trigger]]\nname = "w"\nsource = "pir"\n')
    with pytest.raises(ValueError, match="DEVICE/SENSOR"):
        load_triggers(f)
