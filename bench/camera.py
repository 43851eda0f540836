"""``fogmesh bench camera``: the Con-Pi processed-inputs figure on this machine.

A camera streams 1280x720 frames of a walking figure at 0.5-10 frames/s to
agent pi-1, whose pipeline sends each frame to ``detect`` (HOG people, heavy:
placed by the least-loaded policy, so with 3 agents frames are shared) and
pulses a (mock-pin) relay when someone is found. Per rate and agent count:
frames sent, % processed, % skipped (stale or over the in-flight limit), and
frame-to-actuation latency (capture time to the relay's command arriving).
Plus the frame format: binary (JSON header line + JPEG) against JSON+base64.
"""

from __future__ import annotations

import argparse
import base64
import os
import queue
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from typing import Any

import orjson

from fogmesh.bench.rtt_systems import _stop
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.percentiles import percentile

PIPELINE = """[[pipeline]]
name = "deter"
source = "farm-cam/camera"
kind = "detect"
max_age_ms = {max_age}
max_in_flight = {in_flight}
when = {{field = "found"}}
then = {{actuator = "farm-relay/deterrent", op = "pulse", ms = 100}}
"""


def progress(msg: str) -> None:
    print(f"[bench camera] {msg}", file=sys.stderr, flush=True)


def start_agents(url: str, root: str, n: int, pipeline_file: str, state_dir: str) -> list[subprocess.Popen]:
    from fogmesh.bench.placement import agent_process
    return [agent_process(url, root, f"pi-{i + 1}", state_dir, *(["--pipelines", pipeline_file] if i == 0 else []))
            for i in range(n)]


def run_case(url: str, *, fps: float, agents: int, args: argparse.Namespace, state_dir: str) -> dict[str, Any]:
    from fogmesh.bench.placement import wait_ready_ids
    from fogmesh.devices.actuator import ActuatorDevice
    from fogmesh.devices.client import FogClient
    from fogmesh.devices.gpio import make_pin_factory, parse_pins
    from fogmesh.devices.scenes import GeneratedScene
    from fogmesh.devices.streams import CameraDevice
    from fogmesh.mqtt import MqttClient
    from fogmesh.topics import Topics
    root = f"bench/{uuid.uuid4().hex[:8]}"
    t = Topics(root)
    pfile = os.path.join(state_dir, f"pipeline-{uuid.uuid4().hex[:6]}.toml")
    with open(pfile, "w") as f:
        f.write(PIPELINE.format(max_age=args.max_age_ms, in_flight=args.in_flight))
    procs = start_agents(url, root, agents, pfile, state_dir)
    latencies: list[float] = []
    status: queue.Queue = queue.Queue()

    def on_message(m: Any) -> None:
        if m.topic.endswith("/set"):
            latencies.append((time.time() - orjson.loads(m.payload)["frame_ts"]) * 1000)
        else:
            status.put(orjson.loads(m.payload))

    watch = MqttClient(url, on_message=on_message)
    w, _, h = args.size.partition("x")
    try:
        with FogClient(url, root=root) as client:
            wait_ready_ids(client, [f"pi-{i + 1}" for i in range(agents)])
        watch.start()
        watch.subscribe(t.actuator_set("farm-relay", "deterrent"))
        relay = ActuatorDevice(url, device="farm-relay", root=root, pin_factory=make_pin_factory("mock"),
                               specs=parse_pins("deterrent=relay:17")).start()
        camera = CameraDevice(url, device="farm-cam", root=root, fps=fps, quality=80,
                              source=GeneratedScene(width=int(w), height=int(h), people=1, seed=7)).start()
        time.sleep(max(args.seconds, args.min_frames / fps))
        camera.stop()
        sent = camera.seq
        time.sleep(args.max_age_ms / 1000 + 1.5)       # let the last frames finish
        watch.subscribe(t.pipeline_status("pi-1", "deter"))
        stats: dict[str, Any] = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                stats = status.get(timeout=1.0)
            except queue.Empty:
                break
            if stats.get("in_flight") == 0:
                break
        relay.stop()
    finally:
        watch.stop()
        for p in procs:
            _stop(p)
    processed = stats.get("processed", 0)
    return {"fps": fps, "agents": agents, "frames": sent, "processed": processed,
            "processed_pct": 100.0 * processed / sent if sent else 0.0,
            "skipped": stats.get("skipped", 0), "actuations": len(latencies),
            "p50_ms": percentile(latencies, 0.5) if latencies else None,
            "p99_ms": percentile(latencies, 0.99) if latencies else None}


def framing(url: str, size: str, frames: int = 200) -> dict[str, Any]:
    """Binary frames vs JSON with a base64 image: bytes, codec CPU, and
    frames/s through the broker (QoS 0, one publisher, one subscriber)."""
    from fogmesh.devices import vision
    from fogmesh.devices.scenes import GeneratedScene
    from fogmesh.frames import FrameHeader, decode_frame, encode_frame
    from fogmesh.mqtt import MqttClient
    w, _, h = size.partition("x")
    jpeg = vision.encode_jpeg(GeneratedScene(width=int(w), height=int(h), seed=1).next_frame())
    header = FrameHeader("cam", "camera", 1, time.time(), int(w), int(h))

    def binary_enc() -> bytes:
        return encode_frame(header, jpeg)

    def binary_dec(p: bytes) -> bytes:
        return decode_frame(p)[1]

    def b64_enc() -> bytes:
        return orjson.dumps({**header.to_dict(), "image": base64.b64encode(jpeg).decode("ascii")})

    def b64_dec(p: bytes) -> bytes:
        return base64.b64decode(orjson.loads(p)["image"])

    out: dict[str, Any] = {"size": size, "jpeg_bytes": len(jpeg)}
    for name, enc, dec in (("binary", binary_enc, binary_dec), ("base64", b64_enc, b64_dec)):
        payload = enc()
        t0 = time.perf_counter()
        for _ in range(200):
            assert dec(enc()) == jpeg
        codec_us = (time.perf_counter() - t0) / 200 * 1e6
        got: queue.Queue = queue.Queue()
        topic = f"bench/{uuid.uuid4().hex[:8]}/frame"
        sub = MqttClient(url, on_message=lambda m: got.put(dec(m.payload)))
        pub = MqttClient(url)
        sub.start()
        sub.subscribe(topic, qos=0)
        pub.start()
        t0 = time.perf_counter()
        for _ in range(frames):
            pub.publish(topic, enc(), qos=0)
        for _ in range(frames):
            got.get(timeout=30)
        rate = frames / (time.perf_counter() - t0)
        pub.stop()
        sub.stop()
        out[name] = {"bytes": len(payload), "codec_us": codec_us, "frames_per_s": rate}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    counts = [int(n) for n in args.agents.split(",")]
    cases = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as state_dir:
        m = Mosquitto().start()
        stack.callback(m.cleanup)
        progress("frame format: binary vs base64 JSON")
        formats = [framing(m.url, s) for s in ("320x240", args.size)]
        for n in counts:
            for fps in rates:
                progress(f"{n} agent(s), {fps:g} frames/s ...")
                cases.append(run_case(m.url, fps=fps, agents=n, args=args, state_dir=state_dir))
                c = cases[-1]
                progress(f"  {c['processed']}/{c['frames']} processed, p50 {c['p50_ms'] or 0:.0f} ms")
    return {"size": args.size, "max_age_ms": args.max_age_ms, "in_flight": args.in_flight,
            "cases": cases, "framing": formats}


def render(r: dict[str, Any]) -> str:
    lines = [f"Camera -> detect (HOG, {r['size']}) -> relay; frames older than {r['max_age_ms']} ms "
             f"or beyond {r['in_flight']} in flight are skipped; mosquitto, 2 cores",
             "", f"{'agents':>6} {'fps':>5} {'frames':>6} {'processed':>10} {'skipped':>7} "
             f"{'p50 ms':>7} {'p99 ms':>7}"]
    for c in r["cases"]:
        p50 = f"{c['p50_ms']:.0f}" if c["p50_ms"] is not None else "-"
        p99 = f"{c['p99_ms']:.0f}" if c["p99_ms"] is not None else "-"
        lines.append(f"{c['agents']:>6} {c['fps']:>5g} {c['frames']:>6} {c['processed_pct']:>9.0f}% "
                     f"{c['skipped']:>7} {p50:>7} {p99:>7}")
    lines += ["", "Frame format (one frame, through mosquitto at QoS 0):",
              f"{'size':>9} {'format':>7} {'bytes':>8} {'codec us':>9} {'frames/s':>9}"]
    for f in r["framing"]:
        for name in ("binary", "base64"):
            x = f[name]
            lines.append(f"{f['size']:>9} {name:>7} {x['bytes']:>8} {x['codec_us']:>9.0f} {x['frames_per_s']:>9.0f}")
    return "\n".join(lines)
