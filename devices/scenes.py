"""Where a simulated camera's frames come from: a generated scene (moving
figures over a textured background, deterministic by seed, so tests know the
answer), an image folder, or a video file. Pixels via numpy; drawing, decoding
and files via :mod:`fogmesh.devices.vision`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from fogmesh.devices import vision
from fogmesh.errors import DeviceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class FrameSource(Protocol):
    def next_frame(self) -> np.ndarray | None:
        """The next frame, or None when the source has run out."""


@dataclass
class Mover:
    x: float
    y: int
    dx: float
    height: int


class GeneratedScene:
    """``people`` dark figures walking across (bouncing at the edges) at
    ``speed`` px per frame over a fixed background. ``people=0``: a static
    scene (only sensor noise-free background), the no-alarm case."""

    def __init__(self, *, width: int = 320, height: int = 240, people: int = 1,
                 speed: float = 12.0, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.width, self.height = width, height
        grad = np.linspace(170, 215, width, dtype=np.float32)[None, :, None]
        texture = np.random.default_rng(seed).integers(-6, 7, (height, width, 1)).astype(np.float32)
        self.background = np.clip(grad + texture, 0, 255).repeat(3, axis=2).astype(np.uint8)
        fig_h = min(160, height - 20)
        self.movers = [Mover(x=rng.uniform(0, width - fig_h // 2), y=rng.randint(0, height - fig_h - 1),
                             dx=speed * rng.choice((-1, 1)), height=fig_h) for _ in range(people)]
        self.n = 0

    def positions(self) -> list[tuple[int, int, int]]:
        """(x, y, height) of each figure in the frame ``next_frame`` returns next."""
        return [(int(m.x), m.y, m.height) for m in self.movers]

    def next_frame(self) -> np.ndarray:
        frame = self.background.copy()
        for m in self.movers:
            vision.draw_person(frame, int(m.x), m.y, m.height)
            m.x += m.dx
            if not 0 <= m.x <= self.width - m.height // 2:
                m.dx = -m.dx
                m.x = min(max(m.x, 0), self.width - m.height // 2)
        self.n += 1
        return frame


class ImageFolder:
    def __init__(self, path: Path, *, loop: bool = True) -> None:
        self.files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if Path(path).is_dir() else []
        if not self.files:
            raise DeviceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        self.loop, self.i = loop, 0

    def next_frame(self) -> np.ndarray | None:
        if self.i >= len(self.files):
            if not self.loop:
                return None
            self.i = 0
        self.i += 1
        return vision.read_image(self.files[self.i - 1])


class VideoFile:
    def __init__(self, path: Path, *, loop: bool = True) -> None:
        self.path, self.loop = Path(path), loop
        self._frames: Iterator[np.ndarray] = vision.read_video(self.path)
        self._first = next(self._frames, None)      # fail now, not at the first frame
        if self._first is None:
            raise DeviceError(f"video {path} has no frames OpenCV can read")

    def next_frame(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        frame = next(self._frames, None)
        if frame is None and self.loop:
            self._frames = vision.read_video(self.path)
            frame = next(self._frames, None)
        return frame


def make_source(spec: str, *, seed: int = 0) -> FrameSource:
    """``scene`` | ``scene:people=0`` | ``scene:people=2,speed=8,size=640x480``
    | ``folder:PATH`` | ``video:PATH`` (a bare path: folder or video by type)
    | ``camera:N`` (the camera at ``/dev/videoN``)."""
    kind, _, rest = spec.partition(":")
    if kind == "scene":
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        w, _, h = opts.get("size", "320x240").partition("x")
        try:
            return GeneratedScene(width=int(w), height=int(h), people=int(opts.get("people", 1)),
                                  speed=float(opts.get("speed", 12)), seed=int(opts.get("seed", seed)))
        except ValueError as exc:
            raise DeviceError(f"bad scene spec {spec!r}: {exc}; e.g. scene:people=2,speed=8,size=640x480") from exc
    if kind == "folder":
        return ImageFolder(Path(rest))
    if kind == "video":
        return VideoFile(Path(rest))
    if kind == "camera":    # a V4L2 camera: camera:0 is /dev/video0
        return VideoFile(Path(f"/dev/video{rest or 0}"))
    path = Path(spec)
    if path.is_dir():
        return ImageFolder(path)
    if path.is_file():
        return VideoFile(path)
    raise DeviceError(f"unknown frame source {spec!r}: use scene[:opts], folder:PATH, video:PATH or camera:N")
