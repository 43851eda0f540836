"""The vision task kinds, registered through the ``fogmesh.tasks`` entry points
like any user's kinds. Images travel base64-encoded inside the task's JSON args
(the task contract is JSON); camera *streams* use the binary frame format.
OpenCV is imported on first use, so agents that never see a frame start fast.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

from fogmesh.registry import BadArgs, TaskKind

MAX_IMAGE_B64 = 4 * 1024 * 1024


def _image(value: Any, what: str) -> Any:
    from fogmesh.devices import vision
    if not isinstance(value, str) or not value or len(value) > MAX_IMAGE_B64:
        raise BadArgs(f"{what} must be a base64 JPEG/PNG string of at most {MAX_IMAGE_B64} characters")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadArgs(f"{what} is not valid base64: {exc}") from exc
    return vision.decode_jpeg(raw)


def _int_arg(args: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = args.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadArgs(f"args.{name} must be a whole number from {lo} to {hi}")
    return v


def motion(args: Mapping[str, Any]) -> dict[str, Any]:
    """``{"frames": [previous, current]}`` -> boxes around what moved."""
    from fogmesh.devices import vision
    frames = args.get("frames")
    if not isinstance(frames, list) or len(frames) != 2:
        raise BadArgs("args.frames must be [previous, current], two base64 images")
    prev, cur = _image(frames[0], "args.frames[0]"), _image(frames[1], "args.frames[1]")
    boxes = vision.motion_boxes(prev, cur, threshold=_int_arg(args, "threshold", 25, 1, 255),
                                min_area=_int_arg(args, "min_area", 64, 1, 10**7))
    return {"moving": bool(boxes), "count": len(boxes), "boxes": [list(b) for b in boxes]}


def detect(args: Mapping[str, Any]) -> dict[str, Any]:
    """``{"image": b64, "detector": "people"|"faces"}`` -> detections."""
    from fogmesh.devices import vision
    detector = args.get("detector", "people")
    if detector not in ("people", "faces"):
        raise BadArgs('args.detector must be "people" (HOG) or "faces" (Haar cascade)')
    image = _image(args.get("image"), "args.image")
    found = vision.detect_people(image) if detector == "people" else vision.detect_faces(image)
    return {"found": bool(found), "count": len(found),
            "detections": [{"box": list(b), "score": round(s, 3)} for b, s in found]}


MOTION = TaskKind("motion", motion, weight="medium", timeout_s=10.0,
                  description="frame differencing on two frames; boxes of what moved")
DETECT = TaskKind("detect", detect, weight="heavy", timeout_s=30.0,
                  description="people (HOG) or faces (Haar) in one image")
