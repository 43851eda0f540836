"""Hostile input on every topic of topics.md, as anyone who can publish on an
open broker (or a login on its own topics) could send it: bytes that are not
JSON, JSON that is not an object, documents with wrong-typed fields, nesting
deeper than anything re-encodes, values and ids far over their limits,
topics whose id levels are over-long or odd, and documents that speak for
another box (presence on ``presence/pi-1`` saying ``"agent": "pi-2"``, made-up
names by the thousand).

:class:`HostileStream` yields ``(topic, payload, retain)`` from a seed, so a
run can be repeated. It sends *malformed* messages only: a well-formed
protocol message (a claim, an offer, a drain) is the broker ACL's business
(``broker.secure``), not the parser's. The test suite's fuzzing tier
(``tests/fuzzing.py``) draws from the same topic templates and examples;
``fogmesh bench hostile`` runs the stream against agents for as long as you
like."""

from __future__ import annotations

import json
import random
from typing import Any, Iterator

#: Every topic of topics.md under the root, with the name of its document.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("tasks", "task"), ("tasks/{device}", "task"), ("replies/{device}", "reply"),
    ("presence/{agent}", "presence"), ("errors", "dead_letter"), ("agents/{agent}/tasks", "task"),
    ("agents/{agent}/inbox", "inbox"), ("agents/{agent}/control", "control"), ("claims", "claim"),
    ("bridge/{site}", "bridge"), ("sensors/{device}/{sensor}", "reading"),
    ("sensors/{device}/{sensor}/get", "pull"), ("sensors/{device}/control", "rate"),
    ("sensors/{device}/{sensor}/frame", "frame"), ("actuators/{device}/{actuator}/set", "command"),
    ("actuators/{device}/{actuator}/state", "state"), ("pipelines/{agent}/{pipeline}", "pipeline"),
    ("audit/dashboard", "audit"), ("deploy/desired/all", "desired"), ("deploy/desired/agent/{agent}", "desired"),
    ("deploy/bundles/{digest}", "manifest"), ("deploy/chunks/{digest}/{n}", "chunk"),
    ("deploy/reported/{agent}", "report"), ("deploy/history/{serial}", "history"),
    ("agents/{agent}/deploy-health", "reply"), ("probe/{token}", "probe"), ("agents/{agent}/doctor", "probe"),
)

LONG_ID = "x" * 200           # over every id limit (128)
# Odd, but what a broker carries (mosquitto disconnects a client for a topic with
# control characters: those are left to the pure fuzzing tier).
ODD_IDS = ("pi.k", "sp ace", "\u00fcn\u00efcode", "$sys", "", "a:b", "semi;colon", "\u202eevil", LONG_ID,
           "y" * 129, "z" * 1000)


def examples(root: str, *, agent: str = "a1", device: str = "dev", site: str = "farm") -> dict[str, Any]:
    """A well-formed document of each kind (what the mutations start from)."""
    reply_to = f"{root}/replies/hostile"
    task = {"id": "h-1", "kind": "echo", "args": {"x": 1}, "reply_to": reply_to}
    reply = {"id": "h-1", "status": "ok", "result": 1, "worker": agent, "tier": "local",
             "ms": {"queue": 0.1, "run": 0.2, "total": 0.3}}
    return {
        "task": task,
        "reply": reply,
        "presence": {"agent": agent, "state": "online", "ts": 1795000000.0, "cpu": 1.0, "mem": 2.0, "load": 0.1,
                     "queue": 0, "running": 0, "capacity": 2, "kinds": ["echo", "sum"],
                     "battery": {"percent": 80.0, "plugged": False}, "dispatch": "shared", "done": 3,
                     "offloaded": 1, "epoch": 1, "instance": "abc", "since": 1795000000.0, "period": 5.0},
        "dead_letter": {"agent": agent, "ts": 1795000000.5, "error": {"code": "bad_json", "message": "m"},
                        "topic": f"{root}/tasks", "id": None, "excerpt": "{"},
        "inbox": {"op": "result", "offer": f"{agent}:h-1:1", "task": "h-1", "agent": agent, "reply": reply},
        "control": {"op": "noop"},
        "claim": {"task": "h-1", "agent": agent, "op": "done", "reply_to": reply_to, "reply": reply,
                  "tasks": ["h-0"], "epoch": 1},
        "bridge": {"site": site, "agent": f"bridge-{site}", "state": "online", "link": "up", "backlog": 0,
                   "backlog_bytes": 0, "oldest_age_s": 0.0, "kinds": ["echo"], "ts": 1795000000.0,
                   "bytes_in": 0, "bytes_up": 0, "cloud_workers": 1},
        "reading": {"value": 21.4, "unit": "C", "ts": 1795000000.0, "seq": 17},
        "pull": {"reply_to": reply_to, "id": "q1"},
        "rate": {"op": "rate", "hz": 2},
        "frame": {"device": device, "camera": "camera", "seq": 1, "ts": 1795000000.0, "width": 2, "height": 2,
                  "format": "jpeg"},
        "command": {"op": "pulse", "ms": 10, "id": "h-cmd", "reply_to": reply_to},
        "state": {"state": "on", "device": device, "actuator": "lamp", "ts": 1795000000.0},
        "pipeline": {"frames": 1, "submitted": 1, "processed": 1, "skipped": 0, "failed": 0, "actuations": 0,
                     "last_latency_ms": 10.0, "last_decision": "no action", "last_decision_ms": 9.0,
                     "in_flight": 0, "agent": agent},
        "audit": {"ts": 1795000000.0, "who": "alice", "role": "operator", "from": "10.0.0.1", "device": device,
                  "actuator": "lamp", "command": {"op": "on", "id": "dashboard-1"},
                  "result": {"status": "done", "state": "on"}},
        "desired": {"signed": {"format": "fogmesh-desired/1", "target": "all", "serial": 1, "rollback": False,
                               "issued": 1.0, "note": "", "bundles": [{"name": "b", "version": "1.0",
                                                                       "bundle": "ab" * 32, "size": 1,
                                                                       "kinds": ["k"]}]},
                    "signatures": [{"key": "0123456789abcdef", "sig": "AAAA"}]},
        "manifest": {"signed": {"format": "fogmesh-bundle/1", "name": "b", "version": "1.0", "kinds": {},
                                "wheels": [], "payload": {"size": 0, "sha256": "", "chunk_size": 65536,
                                                          "chunks": []}, "created": 1.0},
                     "signatures": []},
        "chunk": {"not": "a chunk"},
        "report": {"agent": agent, "site": "farm", "labels": ["camera"], "desired_serial": 2, "applied_serial": 1,
                   "state": "running", "bundle": "b", "version": "1.0", "reason": None, "detail": "",
                   "progress": 1.0, "bundles": {"b": {"version": "1.0", "serial": 1, "kinds": ["k"],
                                                      "restarts": 0}}, "at": 1795000000.0},
        "history": {"serial": 1, "target": "all", "action": "deploy", "bundles": [], "previous": [], "at": 1.0},
        "probe": {"doctor": "token"},
    }


def hostile_values(rng: random.Random) -> Any:
    """One value a field should never hold."""
    pick = rng.randrange(14)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([-1, 0, 2 ** 63 - 1, -(2 ** 63), 1e308, -1e308, 0.5, 1e-300])
    if pick == 3:
        return "s" * rng.choice([0, 1, 129, 300, 5000, 70_000])
    if pick == 4:
        return rng.choice(ODD_IDS)
    if pick == 5:
        return [rng.random() for _ in range(rng.randrange(5))]
    if pick == 6:
        return {"k": rng.random(), "items": "not-a-method"}
    if pick == 7:
        return nested(rng.choice([50, 200, 300]))
    if pick == 8:
        return [None] * rng.randrange(1, 4)
    if pick == 9:
        return rng.random() * 1e6
    if pick == 10:
        return {str(i): i for i in range(rng.randrange(1, 2000))}
    if pick == 11:
        return ["x" * 200] * 3
    if pick == 12:
        return "on"
    return {"version": 1, "kinds": "k", "serial": "s", "restarts": None}


def dumps(value: Any) -> bytes:
    """JSON bytes of anything, nesting deeper than orjson writes included."""
    return json.dumps(value).encode()


def nested(depth: int) -> Any:
    """An object ``depth`` levels deep (lists and objects in turn)."""
    value: Any = 1
    for i in range(depth - 1):
        value = [value] if i % 2 else {"a": value}
    return {"deep": value}


def deep_bytes(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def mutate(doc: Any, rng: random.Random) -> Any:
    """``doc`` with some fields wrong: replaced by a hostile value, removed, or
    a nested object's field wrong in turn."""
    if not isinstance(doc, dict) or not doc:
        return hostile_values(rng)
    out = dict(doc)
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(list(out))
        roll = rng.random()
        if roll < 0.15:
            out.pop(key, None)
            if not out:
                return out
        elif roll < 0.4 and isinstance(out[key], dict):
            out[key] = mutate(out[key], rng)
        else:
            out[key] = hostile_values(rng)
    if rng.random() < 0.1:
        out["extra"] = hostile_values(rng)
    return out


def segment(rng: random.Random, targets: tuple[str, ...]) -> str:
    roll = rng.random()
    if roll < 0.3 and targets:
        return rng.choice(targets)
    if roll < 0.75:
        return rng.choice(ODD_IDS)
    return f"made-up-{rng.randrange(100_000)}"


def fill(template: str, rng: random.Random, targets: tuple[str, ...]) -> str:
    parts = []
    for level in template.split("/"):
        if level.startswith("{"):
            level = segment(rng, targets) if level not in ("{n}", "{serial}") else \
                rng.choice(["0", "-1", "99999999999999999999", "x", LONG_ID])
        parts.append(level)
    return "/".join(parts)


def payload_for(kind: str, valid: dict[str, Any], rng: random.Random, *, max_payload: int = 256 * 1024,
                seq: int = 0) -> bytes:
    """One malformed payload for a topic whose document is ``kind``. A task
    whose id stays a usable string gets ``-{seq}`` on it: ids are the
    submitter's idempotency keys, and a stream that repeats one sees its
    first answer again instead of an answer per message."""
    roll = rng.randrange(10)
    if roll == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if roll == 1:
        return dumps(rng.choice([None, 1, "text", [1, 2], 1.5, True]))
    if roll == 2:
        return deep_bytes(rng.choice([100, 300, 1100, 5000]))
    if roll == 3:
        return b'{"id": "' + b"h" * (max_payload + 10) + b'"}'
    if roll == 4 and kind == "frame":
        return b"not json\n\xff\xd8"
    doc = mutate(valid.get(kind, {}), rng)
    if kind == "task" and isinstance(doc, dict) and isinstance(doc.get("id"), str) and 0 < len(doc["id"]) <= 100:
        doc["id"] = f"{doc['id']}-{seq}"
    if kind in BOX_SCHEMAS and isinstance(doc, dict) and well_formed(kind, doc):
        field, wrong = BREAK[kind]       # never a document a box could have sent (a forged "offline"...)
        doc[field] = wrong
    return dumps(doc)


def well_formed(kind: str, doc: dict[str, Any]) -> bool:
    """Whether ``doc`` would pass its schema for the box it names (the stream
    sends such documents only as identity forgeries, which are refused)."""
    from fogmesh.errors import InvalidMessage
    try:
        BOX_SCHEMAS[kind](doc)
    except (InvalidMessage, TypeError, ValueError, AttributeError, KeyError):
        return False
    return True


def _presence(doc: dict[str, Any]) -> Any:
    from fogmesh.announcements import Presence
    return Presence.from_dict(doc)


def _bridge(doc: dict[str, Any]) -> Any:
    from fogmesh.announcements import BridgeHealth
    return BridgeHealth.from_dict(doc)


def _report(doc: dict[str, Any]) -> Any:
    from fogmesh.deploy.reported import Report
    return Report.from_dict(doc)


def _pipeline(doc: dict[str, Any]) -> Any:
    from fogmesh.announcements import PipelineStatus
    return PipelineStatus.from_dict(doc, agent=str(doc.get("agent")), name="p")


BREAK = {"presence": ("state", 12), "bridge": ("state", 12), "report": ("desired_serial", -1),
         "pipeline": ("frames", -1)}
BOX_SCHEMAS = {"presence": _presence, "bridge": _bridge, "report": _report, "pipeline": _pipeline}


class HostileStream:
    """Malformed messages on every topic of topics.md, drawn from ``seed``.
    ``targets``: the ids of the boxes under attack (their own topics come up
    often, as an attacker's would); ``forgeries`` of presence speak for
    another box or for a made-up one."""

    def __init__(self, root: str, *, seed: int = 37, targets: tuple[str, ...] = ("a1", "a2"),
                 device: str = "dev", retain_share: float = 0.2) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.targets = targets
        self.valid = examples(root, agent=targets[0] if targets else "a1", device=device)
        self.retain_share = retain_share
        self.sent = 0
        self.by_kind: dict[str, int] = {}

    def forgery(self) -> tuple[str, bytes]:
        """A well-formed presence (or report) that speaks for another box than its topic names."""
        rng = self.rng
        speaker = rng.choice(self.targets) if self.targets else "a1"
        claims = rng.choice([f"made-up-{rng.randrange(1000)}", *[t for t in self.targets if t != speaker]])
        if rng.random() < 0.5:
            doc = dict(self.valid["presence"], agent=claims)
            return f"{self.root}/presence/{speaker}", dumps(doc)
        doc = dict(self.valid["report"], agent=claims)
        return f"{self.root}/deploy/reported/{speaker}", dumps(doc)

    def __iter__(self) -> Iterator[tuple[str, bytes, bool]]:
        return self

    def __next__(self) -> tuple[str, bytes, bool]:
        rng = self.rng
        self.sent += 1
        if rng.random() < 0.08:
            topic, payload = self.forgery()
            kind = "forgery"
        else:
            template, kind = rng.choice(TEMPLATES)
            topic = f"{self.root}/{fill(template, rng, self.targets)}"
            payload = payload_for(kind, self.valid, rng, seq=self.sent)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        retain = rng.random() < self.retain_share and kind not in ("task", "inbox", "claim", "control")
        return topic, payload, retain
