"""Computer vision through OpenCV: the only module that imports cv2.

opencv-python-headless is pinned below 5: the 4.x wheels ship the Haar cascades
and the HOG people detector that ``detect`` uses. OpenCV's errors become
:class:`fogmesh.errors.DeviceError` (sources) or BadArgs (task input) here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fogmesh.errors import DeviceError
from fogmesh.registry import BadArgs

Box = tuple[int, int, int, int]          # x, y, width, height


def encode_jpeg(image: np.ndarray, *, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DeviceError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadArgs("the image is not a JPEG/PNG OpenCV can decode")
    return image


def _gray(image: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.GaussianBlur(g, (5, 5), 0)


def motion_boxes(previous: np.ndarray, current: np.ndarray, *, threshold: int = 25,
                 min_area: int = 64) -> list[Box]:
    """Frame differencing: boxes around what changed between two frames.
    Stateless on purpose (no background model), so any agent can run it."""
    if previous.shape != current.shape:
        raise BadArgs(f"frames differ in size: {previous.shape} vs {current.shape}")
    diff = cv2.absdiff(_gray(previous), _gray(current))
    _, mask = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
    mask = cv2.dilate(mask, None, iterations=2)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [tuple(int(v) for v in cv2.boundingRect(c)) for c in contours if cv2.contourArea(c) >= min_area]
    return sorted(boxes, key=lambda b: -b[2] * b[3])    # type: ignore[return-value]


def detect_people(image: np.ndarray) -> list[tuple[Box, float]]:
    """OpenCV's HOG + linear SVM pedestrian detector (64x128 window)."""
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    return [(tuple(int(v) for v in r), float(w)) for r, w in zip(rects, np.ravel(weights))]  # type: ignore[misc]


def detect_faces(image: np.ndarray) -> list[tuple[Box, float]]:
    """The frontal-face Haar cascade shipped in the opencv 4.x wheels."""
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DeviceError(f"Haar cascade missing at {path}: install opencv-python-headless<5")
    rects = cascade.detectMultiScale(_gray(image), scaleFactor=1.1, minNeighbors=5)
    return [(tuple(int(v) for v in r), 1.0) for r in rects]  # type: ignore[misc]


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DeviceError(f"cannot read image {path}: not a file OpenCV can decode")
    return image


def read_video(path: Path) -> Iterator[np.ndarray]:
    """Frames of a video file, in order, once."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DeviceError(f"cannot open video {path}: missing, or a codec OpenCV lacks")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def write_video(path: Path, frames: list[np.ndarray], *, fps: float = 2.0) -> None:
    """For tests and demos: frames to an MJPG .avi that ``read_video`` reads back."""
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not out.isOpened():
        raise DeviceError(f"cannot write video {path}")
    try:
        for f in frames:
            out.write(f)
    finally:
        out.release()


def draw_person(image: np.ndarray, x: int, y: int, height: int) -> None:
    """A dark standing figure (head, torso, arms, legs): enough of a human
    outline for the HOG detector, for generated scenes with known answers."""
    s = height / 128.0
    dark = (30, 30, 30)

    def p(dx: float, dy: float) -> tuple[int, int]:
        return int(x + dx * s), int(y + dy * s)

    cv2.ellipse(image, p(32, 22), (int(9 * s), int(11 * s)), 0, 0, 360, dark, -1)
    cv2.rectangle(image, p(21, 33), p(43, 78), dark, -1)                         # torso
    cv2.line(image, p(22, 36), p(14, 74), dark, max(1, int(6 * s)))              # arms
    cv2.line(image, p(42, 36), p(50, 74), dark, max(1, int(6 * s)))
    cv2.line(image, p(27, 78), p(23, 118), dark, max(1, int(9 * s)))             # legs
    cv2.line(image, p(37, 78), p(41, 118), dark, max(1, int(9 * s)))
