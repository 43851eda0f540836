"""Tier 1: the box's install flow (fogmesh/deploy/flow.py) as a state machine,
with a fake clock: events in, effects out, no broker, no disk. Each row of
its tables (``STAGES``: what a newer desired state does at each stage;
``FAILURES``: what each failure makes of the job) has a test here."""

from __future__ import annotations

from typing import Any

import pytest

from fogmesh.deploy import flow_events as ev
from fogmesh.deploy.desired import Applied, BundleRef, Desired, Identity
from fogmesh.deploy.flow import step
from fogmesh.deploy.flow_state import BACKOFF, FAILURES, STAGES, FlowOptions, start, wake_at
from fogmesh.deploy.freshness import DesiredBook, Timestamp
from fogmesh.deploy.manifest import ImageSpec, KindSpec, Manifest
from fogmesh.deploy.reported import Report
from fogmesh.errors import DeployRefused
from fogmesh.topics import Topics

pytestmark = pytest.mark.timeout(30)

ME = Identity("pi-1", "farm")
IMAGE = ImageSpec("registry.lan:5000/plant@sha256:" + "a" * 64)


def manifest(version: str, *, size: int = 2048, image: bool = False, kinds: tuple[str, ...] = ("plant",)) -> Manifest:
    specs = {k: KindSpec(weight="light", timeout_s=5.0, health_args={"moisture": 1}, image=IMAGE if image else None)
             for k in kinds}
    return Manifest(name="plantcare", version=version, kinds=specs, wheels=(), payload_size=size,
                    payload_sha256="0" * 64, chunk_size=512, chunks=("c" * 64,) * (-(-size // 512)), created=1.0)


V1, V2, V3 = manifest("1.0"), manifest("2.0"), manifest("3.0")
RUNS_V1 = Applied("plantcare", "1.0", V1.digest, 1)


def ref(m: Manifest) -> BundleRef:
    return BundleRef(m.name, m.version, m.digest, m.payload_size, tuple(m.kinds))


def wants(serial: int, *refs: BundleRef, rollback: bool = False) -> ev.DesiredChanged:
    return ev.DesiredChanged((Desired("site:farm", serial, refs, rollback=rollback),))


class Box:
    """The flow, a fake clock, and every effect it asked for."""

    def __init__(self, *, applied: dict[str, Applied] | None = None, live_check: bool = True,
                 max_bytes: int = 1_000_000) -> None:
        extras = {a.name: {"kinds": ["plant"], "restarts": 1} for a in (applied or {}).values()}
        self.flow = start(FlowOptions(me=ME, topics=Topics("fog/v1"), max_bundle_bytes=max_bytes,
                                      live_check=live_check), applied=applied, extras=extras)
        self.now = 0.0
        self.effects: list[ev.Effect] = []

    def feed(self, event: ev.Event) -> list[ev.Effect]:
        self.flow, out = step(self.flow, event, self.now)
        self.effects += out
        return out

    def at(self, t: float) -> list[ev.Effect]:
        self.now = t
        return self.feed(ev.Tick())

    @property
    def stage(self) -> str | None:
        return self.flow.job.stage if self.flow.job else None

    def reports(self) -> list[Report]:
        return [e.report for e in self.effects if isinstance(e, ev.Publish)]

    def states(self) -> list[str]:
        return [r.state for r in self.reports()]

    def last(self) -> Report:
        return self.reports()[-1]

    def asked(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


def drive(box: Box, m: Manifest, until: str, *, serial: int = 2) -> None:
    """From a desired state naming ``m`` to the start of stage ``until``."""
    box.feed(wants(serial, ref(m)))
    for stage, event in (("compat", ev.ManifestArrived(m)), ("pull", ev.Done("compat")),
                         ("download", ev.Done("pull")), ("install", ev.Done("download")),
                         ("health", ev.Done("install")), ("switch", ev.Done("health")),
                         ("self_check", ev.Done("switch"))):
        if box.stage == until:
            return
        if stage == "install":
            box.feed(ev.Progress(1.0, m.payload_size))
        box.feed(event)
    assert box.stage == until


def reply(box: Box, *, status: str = "ok", code: str | None = None) -> list[ev.Effect]:
    assert box.flow.job is not None
    r: dict[str, Any] = {"id": box.flow.job.task, "status": status}
    if code:
        r["error"] = {"code": code, "message": "no GPIO here"}
    return box.feed(ev.HealthReply(r))


# -- the way through ----------------------------------------------------------------------------
def test_a_new_version_goes_through_every_step_and_runs_after_it_answered_here() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, V2, "download")
    assert box.asked(ev.FetchManifest) == [ev.FetchManifest(V2.digest)]
    assert box.asked(ev.CheckCompat) == [ev.CheckCompat(V2)] and box.asked(ev.PullImages) == []   # no image
    box.feed(ev.Progress(0.05, 100))
    box.feed(ev.Progress(0.5, 1024))
    box.feed(ev.Progress(1.0, 2048))
    box.feed(ev.Done("download"))
    assert [r.progress for r in box.reports()] == [0.0, 0.05, 0.5, 1.0, None]        # every tenth at most
    assert box.last().received == 2048 and box.asked(ev.Install) == [ev.Install(V2)]
    box.feed(ev.Done("install"))
    box.feed(ev.Done("health"))
    switched = {"plantcare": Applied("plantcare", "2.0", V2.digest, 2)}
    assert box.asked(ev.Switch) == [ev.Switch(switched)]
    out = box.feed(ev.Done("switch"))
    assert ev.Tidy((switched["plantcare"], RUNS_V1), None) in out        # the old one waits for the answer
    assert ev.DropStaging(V2.digest) in out
    (ask,) = box.asked(ev.AskHealth)
    assert (ask.kind, ask.args) == ("plant", {"moisture": 1}) and wake_at(box.flow) == 10.0
    out = reply(box)
    assert ev.Tidy((switched["plantcare"],), None) in out                 # it answered here: the old one goes
    assert box.states() == ["downloading"] * 4 + ["installing", "health-check", "running"]
    assert box.last().to_dict()["bundles"] == {"plantcare": {"version": "2.0", "serial": 2, "kinds": ["plant"],
                                                             "restarts": 0}}
    assert (box.last().applied_serial, box.last().desired_serial, box.stage) == (2, 2, None)
    assert box.asked(ev.Save)[-1] == ev.Save(switched, {"plantcare": {"kinds": ["plant"], "restarts": 0}})


def test_without_the_check_after_the_switch_the_job_ends_at_the_switch() -> None:
    box = Box(live_check=False)
    drive(box, V2, "switch")
    box.feed(ev.Done("switch"))
    assert box.asked(ev.AskHealth) == [] and box.states()[-1] == "running" and box.stage is None


def test_no_answer_or_a_busy_agent_says_nothing_about_the_version() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, manifest("2.0", kinds=("plant", "water")), "self_check")
    reply(box, status="error", code="busy")
    assert box.stage == "self_check" and box.flow.job and box.flow.job.kind == "water"
    assert box.at(9.9) == [] and box.stage == "self_check"
    box.at(10.0)                                      # no answer within the timeout
    assert box.asked(ev.Switch)[-1].applied["plantcare"].version == "2.0" and box.states()[-1] == "running"


def test_a_removal_switches_without_the_bundle() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    box.feed(wants(3, BundleRef("plantcare")))
    assert box.asked(ev.Switch) == [ev.Switch({})]
    out = box.feed(ev.Done("switch"))
    assert ev.Save({}, {}) in out and ev.Log("info", "deployment: plantcare removed") in out
    assert box.last().state == "idle" and box.last().bundles == {} and box.last().applied_serial == 3


def test_what_already_runs_is_reported_running_at_once() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    box.feed(wants(5, ref(V1)))
    assert box.states() == ["running"] and box.last().applied_serial == 5 and box.asked(ev.FetchManifest) == []


# -- failures: every row of FAILURES, and any other code --------------------------------------------
WHERE = {"download_stalled": "download", "manifest_missing": "manifest", "no_space": "install",
         "image_pull_failed": "pull", "unexpected": "install", "install_failed": "install",
         "health_check_failed": "health", "bad_signature": "manifest"}


@pytest.mark.parametrize("code", [*FAILURES, "bad_signature"])
def test_each_failure_ends_the_job_as_its_row_says(code: str) -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    m = manifest("2.0", image=True)
    stage = WHERE[code]
    drive(box, m, stage)
    box.feed(ev.Failed(STAGES[stage].step, code, "what went wrong"))
    row = FAILURES.get(code)
    state = row.state if row else "refused"
    r = box.last()
    assert (r.state, r.reason, r.bundle, r.version) == (state, code, "plantcare", "2.0")
    assert r.bundles["plantcare"]["version"] == "1.0" and box.stage is None
    assert (ev.DropStaging(m.digest) in box.effects) == (row is None or not row.keep_staging)
    retried = row is not None and row.retry is not None
    assert wake_at(box.flow) == (30.0 if retried else None)
    assert ("trying again in 30 s" in r.detail) == retried
    assert box.asked(ev.Switch) == []


def test_a_stalled_download_is_tried_again_with_a_growing_wait_then_given_up() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, V2, "download")
    waits = []
    for attempt in range(1, BACKOFF.attempts + 1):
        box.feed(ev.Failed("download", "download_stalled", "no chunk for 120 s"))
        at = wake_at(box.flow)
        if at is None:
            break
        waits.append(at - box.now)
        assert box.at(at - 0.1) == [] and box.stage is None        # not before its time
        box.at(at)
        assert box.stage == "manifest" and box.states()[-1] == "downloading"
        box.feed(ev.ManifestArrived(V2))
        box.feed(ev.Done("compat"))
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0] and attempt == BACKOFF.attempts
    assert box.last().state == "failed" and "gave up after 8 tries" in box.last().detail
    assert box.at(box.now + 86400.0) == [] and ev.DropStaging(V2.digest) not in box.effects
    box.feed(wants(3, ref(V2)))                     # a newer serial: at once
    assert box.stage == "manifest"


def test_a_manifest_that_does_not_come_in_time_is_missing_and_tried_again() -> None:
    box = Box()
    box.feed(wants(2, ref(V2)))
    assert wake_at(box.flow) == 30.0 and box.at(29.9) == []
    out = box.at(30.0)
    assert ev.StopManifest(V2.digest) in out
    assert box.last().reason == "manifest_missing" and "fog/v1/deploy/bundles/" in box.last().detail
    assert wake_at(box.flow) == 60.0


@pytest.mark.parametrize("stage", ["manifest", "download", "install"])
def test_a_bad_digest_is_refused_at_once_and_its_download_dropped(stage: str) -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, V2, stage)
    box.feed(ev.Failed(stage, "digest_mismatch", "chunk 3 does not match its digest"))
    assert (box.last().state, box.last().reason) == ("refused", "digest_mismatch")
    assert ev.DropStaging(V2.digest) in box.effects and wake_at(box.flow) is None
    assert box.at(3600.0) == []                                  # not again for this serial


def test_a_failed_health_check_discards_the_new_version_and_never_switches() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, V2, "health")
    out = box.feed(ev.Failed("health", "health_check_failed", "its health-check task of plant failed: x"))
    assert ev.Discard(V2) in out and box.asked(ev.Switch) == []
    assert box.last().state == "rolled_back" and "the version that ran before keeps serving" in box.last().detail
    assert box.flow.applied == {"plantcare": RUNS_V1}


def test_a_failure_after_the_switch_switches_back_to_what_ran() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, V2, "self_check")
    reply(box, status="error", code="handler_error")
    assert box.stage == "switch_back"
    assert box.asked(ev.Switch)[-1] == ev.Switch({"plantcare": RUNS_V1})
    out = box.feed(ev.Done("switch"))
    assert ev.Save({"plantcare": RUNS_V1}, {"plantcare": {"kinds": ["plant"], "restarts": 1}}) in out
    assert ev.Tidy((RUNS_V1,), None) in out                     # the new environment goes
    r = box.last()
    assert (r.state, r.reason, r.version) == ("rolled_back", "health_check_failed", "2.0")
    assert "no GPIO here after the switch; switched back to 1.0" in r.detail
    assert r.bundles == {"plantcare": {"version": "1.0", "serial": 1, "kinds": ["plant"], "restarts": 1}}


def test_a_first_version_that_fails_after_the_switch_is_switched_off_again() -> None:
    box = Box()
    drive(box, V2, "self_check")
    reply(box, status="error", code="handler_error")
    assert box.asked(ev.Switch)[-1] == ev.Switch({})
    box.feed(ev.Done("switch"))
    assert "switched back to not having it" in box.last().detail and box.flow.applied == {}


def test_image_kinds_are_pulled_and_a_failed_pull_is_tried_again() -> None:
    box = Box()
    m = manifest("1.0", image=True, size=0)
    drive(box, m, "pull")
    assert box.asked(ev.PullImages) == [ev.PullImages(m)]
    box.feed(ev.Failed("pull", "image_pull_failed", "cannot pull it"))
    assert (box.last().state, wake_at(box.flow)) == ("failed", 30.0)
    box.at(30.0)
    box.feed(ev.ManifestArrived(m))
    box.feed(ev.Done("compat"))
    box.feed(ev.Done("pull"))
    assert box.asked(ev.StartDownload)[-1] == ev.StartDownload(m)


def refused_at_once(box: Box, code: str) -> None:
    r = box.last()
    assert (r.state, r.reason, box.stage, wake_at(box.flow)) == ("refused", code, None, None)
    assert box.asked(ev.Switch) == [] and box.asked(ev.Install) == [] and box.at(box.now + 3600.0) == []


def test_wheels_that_do_not_run_here_are_incompatible() -> None:
    box = Box()
    drive(box, V2, "compat")
    box.feed(ev.Failed("compat", "incompatible", "wheel tag cp27-cp27m-win32"))
    refused_at_once(box, "incompatible")


def test_image_kinds_on_a_box_without_an_engine_are_incompatible() -> None:
    box = Box()
    drive(box, manifest("1.0", image=True), "pull")
    box.feed(ev.Failed("pull", "incompatible", "install podman or docker"))
    refused_at_once(box, "incompatible")


def test_a_bundle_over_the_size_limit_is_refused_before_and_after_its_manifest() -> None:
    box = Box(max_bytes=4096)
    box.feed(wants(2, BundleRef("plantcare", "2.0", V2.digest, 10_000)))       # the desired state says so
    refused_at_once(box, "too_large")
    assert box.asked(ev.FetchManifest) == []
    big = manifest("3.0", size=10_000)
    box.feed(wants(3, BundleRef("plantcare", "3.0", big.digest, 100)))          # its manifest says so
    box.feed(ev.ManifestArrived(big))
    refused_at_once(box, "too_large")


def test_a_manifest_of_another_bundle_than_the_one_named_is_a_bad_bundle() -> None:
    box = Box()
    box.feed(wants(2, BundleRef("plantcare", "2.0", V3.digest, V3.payload_size)))
    box.feed(ev.ManifestArrived(V3))
    refused_at_once(box, "bad_bundle")


def test_a_manifest_not_awaited_changes_nothing() -> None:
    box = Box()
    box.feed(wants(2, ref(V2)))
    assert box.feed(ev.ManifestArrived(V3)) == [] and box.stage == "manifest"


def test_an_older_version_is_a_downgrade_unless_the_document_is_a_rollback() -> None:
    box = Box(applied={"plantcare": Applied("plantcare", "2.5", "d25", 1)})
    box.feed(wants(2, ref(V2)))
    refused_at_once(box, "downgrade")
    assert box.states() == ["refused"]                           # nothing was downloaded
    box.feed(wants(3, ref(V2), rollback=True))
    assert box.stage == "manifest"


# -- a newer desired state: every row of STAGES ---------------------------------------------------
BEFORE_THE_SWITCH = ["manifest", "compat", "pull", "download", "install", "health"]


@pytest.mark.parametrize("stage", [*BEFORE_THE_SWITCH, "switch", "self_check"])
def test_a_newer_desired_state_supersedes_the_job_at_each_stage_and_nothing_is_half_applied(stage: str) -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    m = manifest("2.0", image=True)                  # an image and wheels: every stage is on its way
    drive(box, m, stage)
    since = len(box.effects)
    out = box.feed(wants(3, ref(V3)))
    row = STAGES[stage]
    if row.newer == "cancel":                        # a wait on the broker stops at once
        stopped = ev.StopManifest(m.digest) if stage == "manifest" else ev.StopDownload(m.digest)
        assert out[0] == stopped
    else:                                            # a step under way ends first; a switch, checked
        assert out == [] and box.stage == stage
        if row.newer == "step":
            box.feed(ev.Done(row.step))
        else:
            if stage == "switch":
                box.feed(ev.Done("switch"))
            reply(box)
    after = box.effects[since:]
    assert (ev.Discard(m) in after) == row.undo      # what the step built, not to run, goes
    switched = [e.applied["plantcare"].version for e in box.asked(ev.Switch)]
    assert switched == ([] if stage in BEFORE_THE_SWITCH else ["2.0"])    # never switched after it came
    assert all(r.state not in ("failed", "refused", "rolled_back") for r in box.reports())
    assert box.stage == "manifest" and box.asked(ev.FetchManifest)[-1] == ev.FetchManifest(V3.digest)
    assert box.flow.report.desired_serial == 3
    staged = [e for e in after if isinstance(e, ev.Tidy) and e.staging is not None]
    assert staged[-1].staging == (V3.digest,)         # the new pass keeps only the download it wants


def test_a_step_that_fails_after_it_was_superseded_gives_no_verdict() -> None:
    box = Box(applied={"plantcare": RUNS_V1})
    drive(box, V2, "health")
    box.feed(wants(3, ref(V3)))
    out = box.feed(ev.Failed("health", "health_check_failed", "x"))
    assert ev.Discard(V2) in out and "rolled_back" not in box.states() and box.stage == "manifest"
    assert box.flow.tries == {}


def test_the_same_bundle_named_again_by_a_newer_serial_lets_the_job_go_on() -> None:
    box = Box()
    drive(box, V2, "download")
    box.feed(ev.Progress(0.5, 1024))
    out = box.feed(ev.DesiredChanged((Desired("site:farm", 2, (ref(V2),)), Desired("agent:pi-1", 7, (ref(V2),)))))
    assert out == [] and box.stage == "download"          # the download is not started over
    box.feed(ev.Progress(1.0, 2048))
    for step_done in ("download", "install", "health", "switch"):
        box.feed(ev.Done(step_done))
    reply(box)
    assert box.flow.applied["plantcare"].serial == 7 and box.last().applied_serial == 7


def test_another_bundle_s_change_waits_for_the_job_then_has_its_turn() -> None:
    box = Box()
    drive(box, V2, "install")
    other = BundleRef("soil", "1.0", "dsoil", 10, ("soil",))
    box.feed(ev.DesiredChanged((Desired("site:farm", 2, (ref(V2),)), Desired("all", 3, (other,)))))
    assert box.stage == "install"
    box.feed(ev.Done("install"))
    box.feed(ev.Done("health"))
    box.feed(ev.Done("switch"))
    reply(box)
    assert box.asked(ev.FetchManifest)[-1] == ev.FetchManifest("dsoil")


# -- desired states the agent refused: freshness.py's verdict --------------------------------------
def test_a_replayed_document_is_reported_refused_and_changes_nothing() -> None:
    book = DesiredBook()
    stamp = Timestamp.issue({"site:farm": 5}, serial=1, now=1000.0, ttl_s=3600.0)
    book.restamp(stamp, now=1000.0)
    box = Box(applied={"plantcare": RUNS_V1})
    box.feed(wants(5, ref(V1)))
    with pytest.raises(DeployRefused) as refused:
        book.offer(Desired("site:farm", 4, (ref(V2),)), now=1000.0)     # an older signed state, re-published
    box.feed(ev.DocumentRefused(refused.value.code, str(refused.value), 4))
    r = box.last()
    assert (r.state, r.reason, r.desired_serial, r.applied_serial) == ("refused", "stale_serial", 5, 5)
    assert r.bundles["plantcare"]["version"] == "1.0" and box.stage is None and box.asked(ev.FetchManifest) == []


def test_a_document_that_waits_for_a_timestamp_counts_for_no_serial() -> None:
    box = Box()
    box.feed(ev.DocumentRefused("no_timestamp", "waits for the fleet's signed timestamp", 0))
    assert (box.last().state, box.last().desired_serial) == ("refused", 0)


def test_a_refusal_during_a_download_leaves_the_download_going() -> None:
    box = Box()
    drive(box, V2, "download")
    box.feed(ev.DocumentRefused("bad_signature", "a forged state", 9))
    assert box.stage == "download" and box.last().desired_serial == 9
    box.feed(ev.Progress(1.0, 2048))
    box.feed(ev.Done("download"))
    assert box.stage == "install"


# -- the clock --------------------------------------------------------------------------------------
def test_nothing_is_timed_while_nothing_waits() -> None:
    box = Box()
    assert wake_at(box.flow) is None and box.at(1e9) == []
    drive(box, V2, "install")
    assert wake_at(box.flow) is None and box.at(2e9) == [] and box.stage == "install"


def test_events_for_another_step_are_ignored() -> None:
    box = Box()
    drive(box, V2, "install")
    for stray in (ev.Done("download"), ev.Failed("health", "health_check_failed", "x"), ev.Progress(0.5, 1),
                  ev.HealthReply({"id": "someone-else", "status": "error"})):
        assert box.feed(stray) == [] and box.stage == "install"


def test_after_a_defect_of_its_own_the_flow_drops_the_job_and_starts_over_at_the_next_state() -> None:
    from fogmesh.deploy.flow_state import abandoned
    box = Box()
    drive(box, V2, "install")
    box.flow = abandoned(box.flow)
    assert box.feed(ev.Done("install")) == [] and wake_at(box.flow) is None
    box.feed(wants(3, ref(V2)))
    assert box.stage == "manifest"
