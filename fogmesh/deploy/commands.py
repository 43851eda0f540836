"""What ``fogmesh deploy`` does: push, roll out through canaries, roll back,
remove a kind, renew the fleet's timestamp, show status and history. The
command checks before it publishes anything (:mod:`fogmesh.deploy.preflight`)
and holds the rollout: it publishes the canaries' desired states, judges
their reports (:mod:`fogmesh.deploy.rollout`), and either points the whole
target at the new version or rolls the canaries back with a signed rollback."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from fogmesh.deploy import preflight
from fogmesh.deploy.bundle_file import Bundle
from fogmesh.deploy.desired import BundleRef, Desired
from fogmesh.deploy.operator import Operator
from fogmesh.deploy.reported import Report, count_fleet
from fogmesh.deploy.rollout import choose_canaries, judge_canaries
from fogmesh.errors import ConnectError, DeployRefused

__all__ = ["RolloutOptions", "deploy", "history", "remove", "renew", "rollback", "status"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class RolloutOptions:
    canaries: int = 0
    soak_s: float = 30.0
    max_failures_pct: float = 0.0      # canaries failing at this share or more roll back (0: any failure)
    deadline_s: float = 300.0          # a canary silent this long counts as failed
    wait: bool = True
    timeout_s: float = 600.0           # how long to follow the fleet after the push
    wait_for_agents: bool = False      # publish for a target no agent seen answers to (agents that start later)


def _ref_line(ref: BundleRef) -> str:
    return f"{ref.name} absent" if ref.absent else f"{ref.name} {ref.version} ({', '.join(ref.kinds)})"


def _entry(serial: int, target: str, action: str, bundles: tuple[BundleRef, ...], previous: tuple[BundleRef, ...],
           **more: Any) -> dict[str, Any]:
    return {"serial": serial, "target": target, "action": action, "at": round(time.time(), 3),
            "bundles": [b.to_dict() for b in bundles], "previous": [b.to_dict() for b in previous], **more}


def _follow(op: Operator, target: str, serial: int, timeout_s: float, say: Say) -> int:
    """Print the fleet counters as they change until none is in progress; 0 if none failed."""
    last = [""]
    if count_fleet(op.reports.values(), target=target, serial=serial).targeted == 0:
        say(f"  no agent of {target} takes deployments yet (agents need --trust-key); the desired state stays "
            "retained for those that start later")
        return 0

    def settled() -> bool:
        counts = count_fleet(op.reports.values(), target=target, serial=serial)
        line = counts.line()
        if line != last[0]:
            last[0] = line
            say(f"  {line}")
        return counts.targeted > 0 and counts.in_progress == 0

    if not op.wait_until(settled, timeout_s):
        say(f"still in progress after {timeout_s:.0f} s (agents keep going on their own; `fogmesh deploy status`)")
        return 1
    counts = count_fleet(op.reports.values(), target=target, serial=serial)
    for r in sorted(op.reports.values(), key=lambda r: r.agent):
        if r.identity.matches(target) and r.applied_serial < serial and r.reason:
            say(f"  {r.agent}: {r.state}: {r.reason}: {r.detail}")
    return 0 if counts.failed == 0 else 1


def _check_key(op: Operator, target: str, *, also: tuple[str, ...] = (), wait_for_agents: bool = True) -> None:
    """The signing key (and ``also``) are trusted by the agents, as far as
    the operator knows (``--trust-key``, the targeted agents' reports)."""
    if op.key is None:
        raise DeployRefused("bad_key", "this needs the signing key: give --key FILE (`fogmesh bundle keygen`)")
    key_id = op.key.public.key_id
    preflight.check_key(key_id, op.trust.keys)
    preflight.check_target(target, op.reports.values(), key_ids=(*also, key_id), wait_for_agents=wait_for_agents)


def _current(op: Operator, target: str, say: Say) -> Desired | None:
    """The target's current desired state: the retained one, unless it is
    older than the timestamp names (a replay), then the history's record."""
    doc, floor = op.docs.get(target), op.floors.get(target, 0)
    if doc is None or doc.serial >= floor:
        return doc
    entry = op.history.get(floor)
    basis = f"building on the history of serial {floor}" if entry else "no history of it here: building on it"
    say(f"the retained desired state of {target} (serial {doc.serial}) is older than serial {floor} the fleet's "
        f"timestamp names: a replayed document; this push replaces it ({basis})")
    if entry is None:
        return doc
    bundles: Any = entry.get("bundles", [])
    return Desired(target, floor, tuple(BundleRef.from_dict(b) for b in bundles))


def deploy(op: Operator, bundle: Bundle, target: str, o: RolloutOptions, say: Say) -> int:
    m = bundle.manifest
    op.watch()
    signer = preflight.check_bundle(bundle.signed, op.trust, what=f"bundle {m.label}")
    _check_key(op, target, also=(signer,), wait_for_agents=o.wait_for_agents)
    if m.payload_size:
        say(f"putting {m.label} ({m.payload_size / 1e6:.2f} MB, {len(m.chunks)} chunks) on the broker")
    else:
        say(f"putting {m.label} on the broker (image kinds: agents pull "
            f"{', '.join(sorted(spec.ref for spec in m.images.values()))} from its registry)")
    ref = op.put_bundle(bundle)
    prev = _current(op, target, say)
    before = prev.bundles if prev else ()
    bundles = prev.with_bundle(ref) if prev else (ref,)
    if o.canaries > 0:
        online = [a for a, r in op.reports.items() if r.identity.matches(target) and op.presence.get(a) == "online"]
        canaries = choose_canaries(online, o.canaries)
        if not canaries:
            raise DeployRefused("no_canary", f"no online agent of {target} takes deployments (agents need "
                                "--trust-key); deploy without --canaries, or start them")
        if not _canaries_pass(op, ref, target, canaries, before, o, say):
            return 1
    serial = op.serial()
    op.put_desired(Desired(target, serial, bundles, issued=round(time.time(), 3), note=f"deploy {m.label}"))
    op.record(_entry(serial, target, "deploy", bundles, before))
    say(f"desired state of {target} is serial {serial}: {'; '.join(_ref_line(b) for b in bundles)}")
    if not o.wait:
        return 0
    code = _follow(op, target, serial, o.timeout_s, say)
    counts = count_fleet(op.reports.values(), target=target, serial=serial)
    if counts.failed and 100.0 * counts.failed / max(1, counts.targeted) >= o.max_failures_pct:
        say(f"{counts.failed} of {counts.targeted} agents failed: rolling {target} back")
        _publish_rollback(op, target, serial, bundles, before, o, say)
        return 1
    return code


def _canaries_pass(op: Operator, ref: BundleRef, target: str, canaries: list[str], before: tuple[BundleRef, ...],
                   o: RolloutOptions, say: Say) -> bool:
    serial = op.serial()
    say(f"canaries: {', '.join(canaries)} (soak {o.soak_s:.0f} s, roll back at {o.max_failures_pct:g}% failed)")
    op.put_desired(*(Desired(f"agent:{c}", serial, (ref,), issued=round(time.time(), 3), note=f"canary of {target}")
                     for c in canaries))
    op.record(_entry(serial, target, "canary", (ref,), before, canaries=canaries))
    started = time.monotonic()
    shown = [""]
    verdict = judge_canaries({}, serial=serial, started=started, now=started, soak_s=o.soak_s,
                             deadline_s=o.deadline_s, max_failures_pct=o.max_failures_pct)

    def decided() -> bool:
        nonlocal verdict
        verdict = judge_canaries({c: op.reports.get(c) for c in canaries}, serial=serial, started=started,
                                 now=time.monotonic(), soak_s=o.soak_s, deadline_s=o.deadline_s,
                                 max_failures_pct=o.max_failures_pct)
        if verdict.why != shown[0]:
            shown[0] = verdict.why
            say(f"  {verdict.action}: {verdict.why}")
        return verdict.action != "wait"

    op.wait_until(decided, o.deadline_s + o.soak_s + 5.0)
    if verdict.action == "proceed":
        return True
    back = next((b for b in before if b.name == ref.name), BundleRef(ref.name))
    serial2 = op.serial()
    op.put_desired(*(Desired(f"agent:{c}", serial2, (back,), rollback=True, issued=round(time.time(), 3),
                             note=f"canaries of {target} failed") for c in canaries))
    op.record(_entry(serial2, target, "rollback", (back,), (ref,), canaries=canaries, why=verdict.why))
    say(f"rolled back: the canaries return to {_ref_line(back)}; the rest of {target} never installed "
        f"{ref.name} {ref.version}")
    return False


def rollback(op: Operator, target: str, o: RolloutOptions, say: Say) -> int:
    """Point ``target`` at what it ran before its newest deployment (signed as a rollback)."""
    op.watch()
    _check_key(op, target)
    doc = _current(op, target, say)
    entry = op.history.get(doc.serial) if doc else None
    if doc is None or entry is None:
        raise DeployRefused("no_history", f"no deployment to {target} is on record to roll back")
    previous = tuple(BundleRef.from_dict(b) for b in entry.get("previous", []))   # type: ignore[attr-defined]
    return _publish_rollback(op, target, doc.serial, doc.bundles, previous, o, say)


def _publish_rollback(op: Operator, target: str, of_serial: int, current: tuple[BundleRef, ...],
                      previous: tuple[BundleRef, ...], o: RolloutOptions, say: Say) -> int:
    """The target's desired state back to ``previous`` (names it lacks: absent), signed as a rollback."""
    before = {b.name: b for b in previous}
    bundles = tuple(before.get(b.name, BundleRef(b.name)) for b in current)
    serial = op.serial()
    op.put_desired(Desired(target, serial, bundles, rollback=True, issued=round(time.time(), 3),
                           note=f"rollback of serial {of_serial}"))
    op.record(_entry(serial, target, "rollback", bundles, current))
    say(f"desired state of {target} is serial {serial} (rollback): {'; '.join(_ref_line(b) for b in bundles)}")
    return _follow(op, target, serial, o.timeout_s, say) if o.wait else 0


def remove(op: Operator, kind: str, target: str, o: RolloutOptions, say: Say) -> int:
    """Take the bundle that registers ``kind`` off ``target``: its tasks get ``unknown_kind``."""
    op.watch()
    _check_key(op, target)
    doc = _current(op, target, say)
    ref = next((b for b in (doc.bundles if doc else ()) if kind in b.kinds and not b.absent), None)
    if doc is None or ref is None:
        raise DeployRefused("no_such_kind", f"no bundle deployed to {target} registers {kind!r}")
    bundles = doc.with_bundle(BundleRef(ref.name))
    serial = op.serial()
    op.put_desired(Desired(target, serial, bundles, issued=round(time.time(), 3), note=f"remove {kind}"))
    op.record(_entry(serial, target, "remove", bundles, doc.bundles))
    say(f"desired state of {target} is serial {serial}: {ref.name} removed (kinds {', '.join(ref.kinds)})")
    return _follow(op, target, serial, o.timeout_s, say) if o.wait else 0


def renew(op: Operator, say: Say, *, every_s: float | None = None, stop: threading.Event | None = None) -> int:
    """A new timestamp naming each target's newest serial seen signed by a
    trusted key (the retained timestamp's and desired states'), valid for
    the operator's ``stamp_ttl_s``; with ``every_s``, again every
    ``every_s`` seconds until ``stop`` (a renewer on a box that is always on)."""
    stop = stop or threading.Event()
    op.watch()
    while True:
        if op.floors:
            try:
                stamp = op.put_stamp()
                say(f"timestamp serial {stamp.serial}: {len(stamp.desired)} target(s), valid until "
                    f"{_at(stamp.expires)}")
            except ConnectError as exc:
                if every_s is None:
                    raise
                say(f"not renewed this time ({exc}); again in {every_s:g} s")
        elif every_s is None:
            raise DeployRefused("nothing_to_renew", "no timestamp or desired state signed by a trusted key is "
                                "retained: nothing to renew (give --trust-key for the key that signs the desired "
                                "states when --key is a timestamp key)")
        else:
            say("nothing to renew yet: no timestamp or desired state signed by a trusted key is retained")
        if every_s is None or stop.wait(every_s):
            return 0


def _at(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _stamp_line(op: Operator) -> str:
    stamp = op.stamp or op.stamp_seen
    if stamp is None:
        return ("timestamp: none retained (agents take no new desired state without one: "
                "`fogmesh deploy renew --key KEY`)")
    state = "EXPIRED at" if stamp.expired(time.time()) else "valid until"
    check = "" if op.stamp is not None else " (signature not checked: give --key or --trust-key)"
    fix = "; renew it: `fogmesh deploy renew --key KEY`" if stamp.expired(time.time()) else ""
    return f"timestamp: serial {stamp.serial}, {len(stamp.desired)} target(s), {state} {_at(stamp.expires)}{check}{fix}"


def newest_known(floors: dict[str, int], history: dict[int, dict[str, object]]) -> dict[str, int]:
    """Per target, the newest serial the operator could know of: the signed
    documents and timestamps seen (``floors``) and the history ``fogmesh
    deploy`` wrote (a canary's entry counts for its canaries' ``agent:ID``)."""
    newest = dict(floors)
    for serial, e in history.items():
        canaries = e.get("canaries")
        for t in [f"agent:{c}" for c in canaries] if isinstance(canaries, list) else [str(e.get("target"))]:
            newest[t] = max(newest.get(t, 0), serial)
    return newest


def behind(r: Report, newest: dict[str, int]) -> dict[str, int]:
    """The targets of ``r``'s agent whose newest known serial it does not run
    although it says it is done (``running``, ``idle``): it took an older
    document as current, which a replay of an old timestamp and desired state
    together, within the old timestamp's lifetime, can make a newcomer do."""
    if r.state not in ("running", "idle"):
        return {}
    return {t: s for t, s in sorted(newest.items()) if r.identity.matches(t) and r.applied_serial < s}


def status(op: Operator, target: str | None, say: Say) -> dict[str, Any]:
    op.watch()
    docs = [d for t, d in sorted(op.docs.items()) if target in (None, t)]
    say(_stamp_line(op))
    shown = op.stamp or op.stamp_seen
    floors = shown.desired if shown is not None else {}
    for d in docs:
        counts = count_fleet(op.reports.values(), target=d.target, serial=d.serial)
        stale = f" [older than serial {floors[d.target]} the timestamp names: replayed?]" \
            if d.serial < floors.get(d.target, 0) else ""
        say(f"{d.target}: serial {d.serial}{' (rollback)' if d.rollback else ''}: "
            f"{'; '.join(_ref_line(b) for b in d.bundles)}{stale}")
        say(f"  {counts.line()}")
    say(f"{'agent':<16} {'presence':<9} {'state':<12} {'desired':>14} {'applied':>14}  bundles / reason")
    newest, late = newest_known(op.floors, op.history), {}
    for r in sorted(op.reports.values(), key=lambda r: r.agent):
        if target is not None and not r.identity.matches(target):
            continue
        bundles = ", ".join(f"{k} {v.get('version')}" for k, v in sorted(r.bundles.items())) or "-"
        why = f"  [{r.reason}: {r.detail}]" if r.reason else ""
        missed = behind(r, newest) if op.presence.get(r.agent) == "online" else {}
        if missed:
            late[r.agent] = missed
            why += "  [replayed? " + "; ".join(f"{t} has serial {s}" for t, s in missed.items()) + \
                " (signed or in the history), this agent runs an older one: `fogmesh deploy BUNDLE --to T` again]"
        progress = f" {100 * r.progress:.0f}%" if r.progress is not None and r.state == "downloading" else ""
        say(f"{r.agent:<16} {op.presence.get(r.agent, '?'):<9} {r.state + progress:<12} {r.desired_serial:>14} "
            f"{r.applied_serial:>14}  {bundles}{why}")
    quiet = sorted(a for a, s in op.presence.items() if s != "offline" and a not in op.reports)
    if quiet:
        say(f"online without deployments (no --trust-key): {', '.join(quiet)}")
    if op.refusals.total:
        say(op.refusals.summary())
    return {"desired": [d.to_dict() for d in docs], "reports": {a: r.to_dict() for a, r in op.reports.items()},
            "timestamp": shown.to_dict() if shown is not None else None, "behind": late}


def history(op: Operator, target: str | None, say: Say) -> list[dict[str, Any]]:
    op.watch()
    entries = [e for s, e in sorted(op.history.items()) if target in (None, e.get("target"))]
    for e in entries:
        names = "; ".join(_ref_line(BundleRef.from_dict(b)) for b in e.get("bundles", []))   # type: ignore[attr-defined]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e.get("at", 0))))   # type: ignore[arg-type]
        extra = f" canaries {', '.join(e['canaries'])}" if e.get("canaries") else ""   # type: ignore[arg-type]
        say(f"{e['serial']}  {stamp}  {e.get('target')}  {e.get('action')}{extra}: {names}")
    return entries


def prune(op: Operator, say: Say, *, timeout_s: float = 10.0) -> list[str]:
    """Clear from the broker the bundles no desired state names and no
    rollback would need (the ``previous`` of each target's newest deployment):
    retained bundles are held in the broker's memory until cleared."""
    from fogmesh.deploy.manifest import Manifest, Signed
    op.watch()
    keep = {b.digest for d in op.docs.values() for b in d.bundles if b.digest}
    newest: dict[str, int] = {}
    for serial, entry in op.history.items():
        target = str(entry.get("target"))
        newest[target] = max(newest.get(target, 0), serial)
    for target, serial in newest.items():
        keep |= {str(b["bundle"]) for b in op.history[serial].get("previous", [])   # type: ignore[attr-defined]
                 if b.get("bundle")}
    known = {str(b["bundle"]) for e in op.history.values()
             for b in [*e.get("bundles", []), *e.get("previous", [])] if b.get("bundle")}   # type: ignore[misc]
    dropped = []
    for digest in sorted(known - keep):
        payload = op.retained(op.topics.deploy_bundle(digest), timeout_s=timeout_s)
        if payload is None:
            continue                      # cleared already
        manifest = Manifest.from_dict(Signed.decode(payload, what=f"bundle {digest[:12]}").document)
        op.drop_bundle(digest, len(manifest.chunks))
        dropped.append(digest)
        say(f"cleared {manifest.label} ({manifest.payload_size / 1e6:.2f} MB, bundle {digest[:12]})")
    if not dropped:
        say("nothing to clear: every bundle on the broker is named by a desired state or kept for a rollback")
    return dropped
