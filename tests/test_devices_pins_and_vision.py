"""Tier 2: actuators on gpiozero's MockFactory (the mock pins are read back),
and the vision kinds on generated images whose answers are known."""

import base64
import time

import numpy as np
import pytest

from fogmesh.devices import vision
from fogmesh.devices.commands import parse_command
from fogmesh.devices.gpio import Actuators, make_pin_factory, parse_pins
from fogmesh.devices.scenes import GeneratedScene, ImageFolder, VideoFile, make_source
from fogmesh.devices.vision_kinds import detect, motion
from fogmesh.errors import DeviceError
from fogmesh.registry import BadArgs, Registry
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bank():
    factory = make_pin_factory("mock")
    a = Actuators(parse_pins("deterrent=relay:17,lamp=led:27:safe=on,siren=buzzer:22:active_low"),
                  pin_factory=factory)
    yield a, factory
    a.close()


def test_actuators_start_in_their_safe_state(bank):
    a, f = bank
    assert (f.pin(17).state, f.pin(27).state) == (False, True)
    assert f.pin(22).state is True          # active low: off is a high pin


@pytest.mark.parametrize("op,pin_state", [("on", True), ("off", False), ("toggle", True)])
def test_on_off_toggle_drive_the_pin(bank, op, pin_state):
    a, f = bank
    assert a.apply(parse_command("deterrent", op.encode())) == ("on" if pin_state else "off")
    assert f.pin(17).state is pin_state


def test_a_pulse_is_on_for_its_length_then_off(bank):
    a, f = bank
    t0 = time.monotonic()
    a.apply(parse_command("deterrent", b'{"op": "pulse", "ms": 200}'))
    assert f.pin(17).state is True
    wait_until(lambda: f.pin(17).state is False, timeout=5, what="the pulse to end")
    assert time.monotonic() - t0 >= 0.19


def test_safe_stops_a_pulse_and_restores_safe_states(bank):
    a, f = bank
    a.apply(parse_command("deterrent", b'{"op": "pulse", "ms": 5000}'))
    a.apply(parse_command("lamp", b"off"))
    a.safe()
    assert (f.pin(17).state, f.pin(27).state) == (False, True)


def test_a_pin_gpiozero_refuses_is_a_device_error():
    factory = make_pin_factory("mock")
    with pytest.raises(DeviceError, match="cannot set up"):
        Actuators(parse_pins("a=relay:17,b=relay:17"), pin_factory=factory)


# -- vision ------------------------------------------------------------------------------
def b64(frame):
    return base64.b64encode(vision.encode_jpeg(frame)).decode()


def test_motion_boxes_the_figure_that_moved():
    scene = GeneratedScene(people=1, speed=12, seed=3)
    (x, y, h), = scene.positions()
    prev = scene.next_frame()
    cur = scene.next_frame()
    out = motion({"frames": [b64(prev), b64(cur)]})
    assert out["moving"] and out["count"] >= 1
    bx, by, bw, bh = out["boxes"][0]
    assert bx <= x + 40 and bx + bw >= x + 20 and by <= y + 40     # the box covers the figure


def test_a_static_scene_has_no_motion():
    scene = GeneratedScene(people=0, seed=3)
    assert motion({"frames": [b64(scene.next_frame()), b64(scene.next_frame())]}) == \
        {"moving": False, "count": 0, "boxes": []}


def test_detect_finds_the_one_person_in_a_generated_frame():
    frame = GeneratedScene(people=1, speed=0, seed=1).next_frame()
    out = detect({"image": b64(frame)})
    assert out["found"] and out["count"] >= 1


def test_detect_finds_nobody_in_an_empty_scene():
    out = detect({"image": b64(GeneratedScene(people=0, seed=1).next_frame())})
    assert out == {"found": False, "count": 0, "detections": []}


def test_the_face_detector_runs_on_the_shipped_haar_cascade():
    assert detect({"image": b64(GeneratedScene(people=0).next_frame()), "detector": "faces"})["count"] == 0


@pytest.mark.parametrize("args", [{}, {"image": "%%%"}, {"image": base64.b64encode(b"not a jpeg").decode()},
                                  {"image": "aGk=", "detector": "cats"}])
def test_bad_images_are_bad_args(args):
    with pytest.raises(BadArgs):
        detect(args)


def test_frames_of_different_sizes_are_bad_args():
    small, big = np.zeros((10, 10, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(BadArgs, match="differ in size"):
        motion({"frames": [b64(small), b64(big)]})


def test_vision_kinds_are_registered_as_medium_and_heavy():
    reg = Registry.from_entry_points()
    assert (reg.get("motion").weight, reg.get("detect").weight) == ("medium", "heavy")


def test_generated_scenes_are_deterministic_by_seed():
    a, b = GeneratedScene(seed=9), GeneratedScene(seed=9)
    assert all(np.array_equal(a.next_frame(), b.next_frame()) for _ in range(3))


def test_image_folders_and_video_files_are_frame_sources(tmp_path):
    scene = GeneratedScene(seed=2)
    frames = [scene.next_frame() for _ in range(3)]
    for i, f in enumerate(frames):
        (tmp_path / f"{i}.jpg").write_bytes(vision.encode_jpeg(f))
    folder = ImageFolder(tmp_path, loop=False)
    assert [folder.next_frame() is not None for _ in range(4)] == [True, True, True, False]
    vision.write_video(tmp_path / "clip.avi", frames)
    video = make_source(f"video:{tmp_path / 'clip.avi'}")
    assert isinstance(video, VideoFile) and video.next_frame().shape == frames[0].shape
    with pytest.raises(DeviceError):
        make_source("webcam:0")
