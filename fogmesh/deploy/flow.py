"""The box's install flow as a state machine: ``step(flow, event, now) ->
(flow, effects)``. Pure: ``now`` (a monotonic clock) comes in, the receiver
(:mod:`fogmesh.deploy.receiver`) carries out the effects and feeds their
outcomes back (vocabulary: :mod:`fogmesh.deploy.flow_events`; the state and
the tables: :mod:`fogmesh.deploy.flow_state`).

A *pass* takes what runs to what the desired states want, one change (a
bundle name) at a time, in name order; each change is a *job* through the
stages of :data:`STAGES`: the manifest, the wheels' compatibility, the
images, the download, the install, the health check, the switch, the check
after it (and, when that fails, the switch back). A failure ends the job as
:data:`FAILURES` says (the report's state, whether and when it is tried
again, whether its download stays); a change that failed is not tried again
for the same serial except as that table says, so a bad push never loops.

A newer desired state that still wants the job's bundle (the same digest)
lets it go on. One that does not supersedes it as :data:`STAGES` says:
a wait on the broker (manifest, download) stops at once (what is staged is
kept for a later resume); a step that is running ends first, and what it
built goes (``undo``); the switch ends as a whole (checked, or switched
back). Then a new pass starts. Replayed or stale documents never come here:
:mod:`fogmesh.deploy.freshness` refuses them and the flow reports its verdict.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from fogmesh.deploy import flow_events as ev
from fogmesh.deploy import self_check
from fogmesh.deploy.desired import Applied, Change, changes, check_downgrade, effective
from fogmesh.deploy.flow_events import Effect, Event
from fogmesh.deploy.flow_state import FAILURES, NEVER, REFUSED, STAGES, Flow, Job, Key, Tries, reported
from fogmesh.errors import DeployRefused

__all__ = ["step"]


def step(flow: Flow, event: Event, now: float) -> tuple[Flow, list[Effect]]:
    out: list[Effect] = []
    return _ON[type(event)](flow, event, now, out), out


# -- passes and jobs ------------------------------------------------------------------------
def _key(c: Change) -> Key:
    return (c.name, c.want.digest, c.serial)


def _say(flow: Flow, out: list[Effect], **fields: Any) -> Flow:
    flow = replace(flow, report=reported(flow, **fields))
    out.append(ev.Publish(flow.report))
    return flow


def _pass(flow: Flow, now: float, out: list[Effect]) -> Flow:
    """A new pass: what the documents want now; staged downloads no change wants go."""
    wanted = effective(flow.docs, flow.o.me)
    todo = changes(wanted, flow.applied)
    out.append(ev.Tidy(tuple(flow.applied.values()), tuple(sorted({c.want.digest for c in todo if c.want.digest}))))
    flow = replace(flow, dirty=False, report=flow.report.but(desired_serial=max(flow.report.desired_serial,
                                                                                  wanted.serial)))
    return _next(flow, now, out)


def _next(flow: Flow, now: float, out: list[Effect]) -> Flow:
    """The next change of the pass, or its end (all applied: ``running``)."""
    wanted = effective(flow.docs, flow.o.me)
    todo = changes(wanted, flow.applied)
    flow = replace(flow, job=None, tries={k: t for k, t in flow.tries.items() if k in {_key(c) for c in todo}})
    for c in todo:
        t = flow.tries.get(_key(c))
        if t is None or t.retry_at <= now:
            return _begin(flow, c, now, out)
    out.append(ev.Save(flow.applied, flow.extras))
    if not todo:
        flow = _say(flow, out, state="running" if flow.applied else "idle", reason=None, detail="", bundle=None,
                    version=None, progress=None, applied_serial=wanted.serial)
    return flow


def _after(flow: Flow, now: float, out: list[Effect]) -> Flow:
    return _pass(flow, now, out) if flow.dirty else _next(flow, now, out)


def _begin(flow: Flow, c: Change, now: float, out: list[Effect]) -> Flow:
    ref = c.want
    if ref.absent:
        to = {k: a for k, a in flow.applied.items() if k != c.name}
        out.append(ev.Switch(to))
        return replace(flow, job=Job(c, "remove", to=to, to_extras={k: x for k, x in flow.extras.items()
                                                                    if k != c.name}))
    flow = replace(flow, job=Job(c, "manifest"))
    try:
        check_downgrade(c, flow.applied)
    except DeployRefused as exc:
        return _fail(flow, exc.code, str(exc), now, out)
    flow = _say(flow, out, state="downloading", bundle=c.name, version=ref.version, reason=None, detail="",
                progress=0.0, received=0)
    limit = flow.o.max_bundle_bytes
    if ref.size > limit:
        return _fail(flow, "too_large", f"{c.name} {ref.version} is {ref.size / 1e6:.1f} MB, over this agent's "
                     f"--max-bundle-mb {limit / 1e6:g}", now, out)
    assert ref.digest is not None
    out.append(ev.FetchManifest(ref.digest))
    return _job(flow, deadline=now + flow.o.manifest_timeout_s)


def _job(flow: Flow, **fields: Any) -> Flow:
    assert flow.job is not None
    return replace(flow, job=replace(flow.job, **fields))


def _enter(flow: Flow, stage: str, now: float, out: list[Effect]) -> Flow:
    """The job moves to ``stage``: what it asks for there."""
    job = flow.job
    assert job is not None and job.manifest is not None
    m, name = job.manifest, job.change.name
    flow = _job(flow, stage=stage, deadline=None)
    if stage == "compat":
        out.append(ev.CheckCompat(m))
    elif stage == "pull":
        if not m.images:
            return _enter(flow, "download", now, out)
        out.append(ev.PullImages(m))
    elif stage == "download":
        out.append(ev.StartDownload(m))
    elif stage == "install":
        flow = _say(flow, out, state="installing", progress=None, received=job.received)
        out.append(ev.Install(m))
    elif stage == "health":
        flow = _say(flow, out, state="health-check")
        out.append(ev.HealthCheck(m))
    elif stage == "switch":
        to = {**flow.applied, name: Applied(name, m.version, m.digest, job.change.serial)}
        to_extras = {**flow.extras, name: {"kinds": sorted(m.kinds), "restarts": 0}}
        out.append(ev.Switch(to))
        flow = _job(flow, before=flow.applied.get(name), before_extras=dict(flow.extras.get(name, {})), to=to,
                    to_extras=to_extras)
    elif stage == "self_check":
        if not flow.o.live_check:
            return _passed(flow, now, out)
        return _ask(_job(flow, kinds=tuple(sorted(m.kinds))), now, out)
    return flow


def _commit(flow: Flow, out: list[Effect], *, keep: Applied | None = None) -> Flow:
    """The switch happened: what runs is the job's ``to``."""
    assert flow.job is not None
    flow = replace(flow, applied=dict(flow.job.to), extras=dict(flow.job.to_extras))
    out.append(ev.Save(flow.applied, flow.extras))
    out.append(ev.Tidy(tuple(flow.applied.values()) + ((keep,) if keep else ()), None))
    return flow


def _ask(flow: Flow, now: float, out: list[Effect]) -> Flow:
    """The check after the switch: the next kind's health task, or the end of it."""
    job = flow.job
    assert job is not None and job.manifest is not None
    if not job.kinds:
        return _passed(flow, now, out)
    kind, n = job.kinds[0], flow.asked + 1
    task = self_check.task_id(digest=job.manifest.digest, kind=kind, n=n, agent=flow.o.me.agent)
    out.append(ev.AskHealth(kind, task, job.manifest.kinds[kind].health_args))
    return _job(replace(flow, asked=n), kinds=job.kinds[1:], kind=kind, task=task,
                deadline=now + flow.o.health_timeout_s)


def _passed(flow: Flow, now: float, out: list[Effect]) -> Flow:
    """It answered here: the version before goes."""
    out.append(ev.Tidy(tuple(flow.applied.values()), None))
    return _after(flow, now, out)


def _fail(flow: Flow, code: str, detail: str, now: float, out: list[Effect]) -> Flow:
    """The job ends as :data:`FAILURES` says."""
    job = flow.job
    assert job is not None
    c, ref = job.change, job.change.want
    outcome = FAILURES.get(code, REFUSED)
    key = _key(c)
    count = flow.tries[key].count + 1 if key in flow.tries else 1
    retry_at = NEVER
    if outcome.retry is not None and count < outcome.retry.attempts:
        wait = outcome.retry.delay(count)
        retry_at, detail = now + wait, f"{detail}; trying again in {wait:.0f} s"
    elif outcome.retry is not None:
        detail = f"{detail}; gave up after {count} tries (a newer desired state, or a restart, tries again)"
    out.append(ev.Log("warning", f"deployment of {c.name} {ref.version or 'removal'}: {outcome.state} ({detail})"))
    if not outcome.keep_staging and ref.digest:
        out.append(ev.DropStaging(ref.digest))
    flow = _say(flow, out, state=outcome.state, reason=code, detail=detail, bundle=c.name, version=ref.version,
                progress=None)
    return _after(replace(flow, tries={**flow.tries, key: Tries(count, retry_at)}), now, out)


def _stop(flow: Flow, now: float, out: list[Effect]) -> Flow:
    """A superseded job ends here, without a verdict; a new pass follows."""
    job = flow.job
    assert job is not None
    if job.stage == "manifest" and job.change.want.digest:
        out.append(ev.StopManifest(job.change.want.digest))
    elif job.stage == "download" and job.change.want.digest:
        out.append(ev.StopDownload(job.change.want.digest))
    out.append(ev.Log("info", f"deployment of {job.change.name} {job.change.want.version or 'removal'}: "
                           f"superseded by a newer desired state at its {job.stage}"))
    return _pass(flow, now, out)


# -- events --------------------------------------------------------------------------------
def _on_desired(flow: Flow, e: ev.DesiredChanged, now: float, out: list[Effect]) -> Flow:
    flow = replace(flow, docs=e.docs)
    job = flow.job
    if job is None:
        return _pass(flow, now, out)
    wanted = effective(flow.docs, flow.o.me)
    entry = wanted.refs.get(job.change.name)
    if entry is not None and entry[0].digest == job.change.want.digest and not job.superseded:
        ref, serial, rollback = entry           # still wanted (by a newer serial, maybe): it goes on
        report = flow.report.but(desired_serial=max(flow.report.desired_serial, wanted.serial))
        return replace(flow, report=report, dirty=True, job=replace(job, change=Change(job.change.name, ref, serial,
                                                                                        rollback)))
    if STAGES[job.stage].newer == "cancel":
        return _stop(flow, now, out)
    return replace(flow, dirty=True, job=replace(job, superseded=True))


def _on_refused(flow: Flow, e: ev.DocumentRefused, now: float, out: list[Effect]) -> Flow:
    out.append(ev.Log("warning", f"deployment refused: {e.detail}", limited=True))
    return _say(flow, out, state="refused", reason=e.code, detail=e.detail, bundle=None, version=None,
                progress=None, desired_serial=max(flow.report.desired_serial, e.serial))


def _on_tick(flow: Flow, e: ev.Tick, now: float, out: list[Effect]) -> Flow:
    job = flow.job
    if job is None:
        due = any(t.retry_at <= now for t in flow.tries.values())
        return _pass(flow, now, out) if due else flow
    if job.deadline is None or now < job.deadline:
        return flow
    if job.stage == "manifest":
        digest = job.change.want.digest or ""
        out.append(ev.StopManifest(digest))
        return _fail(flow, "manifest_missing", f"bundle {digest[:12]}'s manifest did not arrive within "
                     f"{flow.o.manifest_timeout_s:.0f} s (is it still retained on "
                     f"{flow.o.topics.deploy_bundle(digest)}?)", now, out)
    return _ask(flow, now, out)          # self-check: no answer says nothing about the version


def _on_manifest(flow: Flow, e: ev.ManifestArrived, now: float, out: list[Effect]) -> Flow:
    job, m = flow.job, e.manifest
    if job is None or job.stage != "manifest" or m.digest != job.change.want.digest:
        return flow
    out.append(ev.StopManifest(m.digest))
    flow = _job(flow, manifest=m, deadline=None)
    c, limit = job.change, flow.o.max_bundle_bytes
    if (m.name, m.version) != (c.name, c.want.version):
        return _fail(flow, "bad_bundle", f"bundle {m.digest[:12]} is {m.label}, not the {c.name} {c.want.version} "
                     "the desired state names", now, out)
    if m.payload_size > limit:
        return _fail(flow, "too_large", f"{m.label} is {m.payload_size / 1e6:.1f} MB, over this agent's "
                     f"--max-bundle-mb {limit / 1e6:g}", now, out)
    return _enter(flow, "compat", now, out)


def _on_progress(flow: Flow, e: ev.Progress, now: float, out: list[Effect]) -> Flow:
    job = flow.job
    if job is None or job.stage != "download":
        return flow
    flow = _job(flow, received=e.received)
    if e.progress - job.shown >= 0.1 or e.progress >= 1.0:
        flow = _job(_say(flow, out, progress=e.progress, received=e.received), shown=e.progress)
    return flow


def _on_reply(flow: Flow, e: ev.HealthReply, now: float, out: list[Effect]) -> Flow:
    job = flow.job
    if job is None or job.stage != "self_check" or e.reply.get("id") != job.task:
        return flow
    trouble = self_check.judge(e.reply, job.kind)
    if trouble is None:
        return _ask(flow, now, out)
    before = job.before
    to = {k: a for k, a in flow.applied.items() if k != job.change.name}
    to_extras = {k: x for k, x in flow.extras.items() if k != job.change.name}
    if before is not None:
        to[before.name], to_extras[before.name] = before, job.before_extras
    out.append(ev.Switch(to))
    return _job(flow, stage="switch_back", deadline=None, trouble=trouble, to=to, to_extras=to_extras)


def _on_done(flow: Flow, e: ev.Done, now: float, out: list[Effect]) -> Flow:
    job = flow.job
    if job is None or STAGES[job.stage].step != e.step:
        return flow
    stage, m = STAGES[job.stage], job.manifest
    if job.stage == "switch":
        flow = _commit(flow, out, keep=job.before)
        assert m is not None
        out.append(ev.DropStaging(m.digest))
        out.append(ev.Log("info", f"deployment: {m.label} runs"))
    elif job.stage in ("switch_back", "remove"):
        flow = _commit(flow, out)
        back = job.before
        out.append(ev.Log("info", f"deployment: {back.name} {back.version} runs" if back else
                       f"deployment: {job.change.name} removed"))
    if job.stage == "switch_back":
        assert m is not None
        return _fail(flow, "health_check_failed", f"{m.label}: {job.trouble} after the switch; switched back to "
                     f"{job.before.version if job.before else 'not having it'}", now, out)
    if job.superseded and stage.newer == "step":
        if stage.undo and m is not None:
            out.append(ev.Discard(m))
        return _stop(flow, now, out)
    if not stage.then:
        return _after(flow, now, out)
    return _enter(flow, stage.then, now, out)


def _on_failed(flow: Flow, e: ev.Failed, now: float, out: list[Effect]) -> Flow:
    job = flow.job
    if job is None or STAGES[job.stage].step != e.step:
        return flow
    m, detail = job.manifest, e.detail
    if job.stage == "manifest" and job.change.want.digest:
        out.append(ev.StopManifest(job.change.want.digest))
    if job.stage in ("health", "switch") and m is not None:
        out.append(ev.Discard(m))          # built and checked, never run: nothing of it stays
        if e.code == "health_check_failed":
            detail = f"{m.label}: {detail}; the version that ran before keeps serving"
    if job.superseded and STAGES[job.stage].newer == "step":
        return _stop(flow, now, out)    # no longer wanted: no verdict on it
    return _fail(flow, e.code, detail, now, out)


_ON: Mapping[type, Callable[[Flow, Any, float, list[Effect]], Flow]] = {
    ev.DesiredChanged: _on_desired, ev.DocumentRefused: _on_refused, ev.Tick: _on_tick,
    ev.ManifestArrived: _on_manifest, ev.Progress: _on_progress, ev.HealthReply: _on_reply, ev.Done: _on_done,
    ev.Failed: _on_failed,
}
