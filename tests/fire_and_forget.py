"""A device as most firmware is: it publishes each task once, at QoS 1, and
never again, and a plain MQTT subscriber counts the replies per task id."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

from fogmesh.mqtt import MqttClient


class Device:
    """Publishes each task once (most firmware) and counts replies per id."""

    def __init__(self, url: str, root: str) -> None:
        self.root = root
        self.replies: Counter[str] = Counter()
        self.answers: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.sub = MqttClient(url, client_id=f"dev-replies-{uuid.uuid4().hex[:8]}", clean_session=False,
                              on_message=self._reply)
        self.sub.start(timeout=30)
        self.sub.subscribe(f"{root}/replies/dev")
        self.pub = MqttClient(url)
        self.pub.start(timeout=30)
        self.sent: list[str] = []
        self.kind, self.weight = "sleep", "medium"

    def _reply(self, m) -> None:
        r = json.loads(m.payload)
        with self.lock:
            self.replies[r["id"]] += 1
            self.answers.setdefault(r["id"], []).append(bytes(m.payload))

    def send(self, n: int, *, ms: int = 20, per_s: float = 200.0) -> None:
        started = time.monotonic()
        for i in range(n):
            task_id = f"t{len(self.sent):05d}"
            args = {"ms": ms} if self.kind == "sleep" else {"data": task_id, "rounds": 50}
            self.pub.publish(f"{self.root}/tasks", json.dumps(
                {"id": task_id, "kind": self.kind, "args": args, "weight": self.weight,
                 "reply_to": f"{self.root}/replies/dev"}).encode(), qos=1)
            self.sent.append(task_id)
            time.sleep(max(0.0, started + (i + 1) / per_s - time.monotonic()))   # the device's pace, not a wait

    def settle(self, timeout: float = 90.0) -> tuple[list[str], list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.replies) < len(self.sent):
            time.sleep(0.2)                    # replies still on their way
        time.sleep(1.0)                        # room for a late duplicate: an absence cannot be awaited
        with self.lock:
            lost = [t for t in self.sent if self.replies[t] == 0]
            doubled = [t for t in self.sent if self.replies[t] > 1]
            differing = [t for t in doubled if len(set(self.answers[t])) > 1]
        # The same bytes again is one answer sent twice; bytes that differ (the timings in
        # "ms", the worker) would be a second run.
        assert differing == [], f"tasks run twice: {[(t, self.answers[t]) for t in differing[:3]]}"
        return lost, doubled

    def close(self) -> None:
        self.sub.stop()
        self.pub.stop()
