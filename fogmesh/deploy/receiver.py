"""The box's side of a deployment: desired state in, bundles fetched,
verified, installed and health-checked, the kinds switched, state reported.
Used by the fog agent (and by anything else that runs kinds).

Its own MQTT connection (clean session: everything it needs is retained)
and its own thread: a 5 MB download never waits behind tasks, and tasks
never wait behind it. What to do, and when, is :mod:`fogmesh.deploy.flow`'s
(pure): this shell turns messages and time into its events, carries out
the effects it asks for (subscribe, verify, install, check, switch,
report...) and feeds their outcomes back. The old version serves until the
new one has passed every check; ``switch`` (the agent's) then replaces the
kinds in one step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from fogmesh import codec
from fogmesh.broker_url import BrokerUrl
from fogmesh.containers import Engine
from fogmesh.deploy import compat, images, self_check
from fogmesh.deploy import flow_events as ev
from fogmesh.deploy.desired import Applied, Identity
from fogmesh.deploy.downloading import Download
from fogmesh.deploy.env_store import EnvStore
from fogmesh.deploy.flow import step
from fogmesh.deploy.flow_state import Flow, FlowOptions, abandoned, reported, start, wake_at
from fogmesh.deploy.freshness import DesiredBook
from fogmesh.deploy.install import env_lib, install_env
from fogmesh.deploy.intake import Intake
from fogmesh.deploy.kinds import bundle_kinds
from fogmesh.deploy.manifest import Manifest, Signed, sha256
from fogmesh.deploy.probe import health_check
from fogmesh.deploy.report_gate import ReportGate
from fogmesh.deploy.reported import Report
from fogmesh.deploy.signing import TrustStore
from fogmesh.errors import DeployRefused, InvalidMessage
from fogmesh.log_limit import LogLimit
from fogmesh.messages import Reply
from fogmesh.mqtt import Message, MqttClient
from fogmesh.registry import Registry, TaskKind
from fogmesh.topics import Topics

log = logging.getLogger(__name__)
REPORT_EVERY_S = 5.0      # a refusal after a refusal is reported at most this often (the latest: report_gate.py)
LOG_EVERY_S = 10.0        # lines hostile input can repeat (a refused document): at most one this often

__all__ = ["DeployReceiver", "ReceiverOptions"]


@dataclass(frozen=True)
class ReceiverOptions:
    max_bundle_bytes: int = 100 * 1024 * 1024
    manifest_timeout_s: float = 30.0
    health_timeout_s: float = 10.0
    window: int = 4          # chunks asked for at once: what a cut link may make come twice
    stall_s: float = 10.0
    give_up_s: float = 120.0
    mqtt5: bool = False


class DeployReceiver:
    def __init__(self, *, broker: BrokerUrl | str, identity: Identity, topics: Topics, store: EnvStore,
                 trust: TrustStore, base: Registry, switch: Callable[[Registry], None], live_check: bool = True,
                 stamp_trust: TrustStore | None = None,
                 log: logging.LoggerAdapter[Any] | logging.Logger = log,
                 options: ReceiverOptions = ReceiverOptions(),
                 wall_clock: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic) -> None:
        self.me, self.topics, self.store, self.trust, self.base = identity, topics, store, trust, base
        self._switch, self.log, self.o = switch, log, options
        self.wall_clock, self.clock = wall_clock, clock
        self._inbox: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.client = MqttClient(broker, client_id=f"fd-{identity.agent}-{sha256(topics.root.encode())[:8]}",
                                 clean_session=True, on_message=self._inbox.put, mqtt5=options.mqtt5,
                                 reconnect_max=2.0)
        self.book = DesiredBook()           # the desired states taken, waiting, and the fleet's timestamp
        self.intake = Intake(me=identity, topics=topics, trust=trust, book=self.book, wall_clock=wall_clock, log=log,
                             stamp_trust=stamp_trust if stamp_trust is not None else trust, clock=clock)
        self.gate = ReportGate(every_s=REPORT_EVERY_S)     # a report only when it changes; refusals rate-limited
        self._refusal_lines = LogLimit(every_s=LOG_EVERY_S)
        self.flow: Flow = start(FlowOptions(me=identity, topics=topics, max_bundle_bytes=options.max_bundle_bytes,
                                            manifest_timeout_s=options.manifest_timeout_s,
                                            health_timeout_s=options.health_timeout_s, live_check=live_check),
                                trust=tuple(sorted(trust.keys)))
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._outcomes: deque[ev.Event] = deque()      # of the steps carried out, fed back one a turn
        self._manifest: str | None = None               # the bundle whose manifest is awaited
        self._download: Download | None = None
        self._shown: tuple[float, int] | None = None    # the download's progress last fed to the flow
        self._checked: dict[str, dict[str, TaskKind]] = {}   # image kinds a health check made, by bundle digest
        self.health_topic = topics.agent_topic(identity.agent, "deploy-health")
        self._do: dict[type, Callable[[Any], ev.Event | None]] = {
            ev.Publish: self._publish, ev.Log: self._log, ev.Save: self._save, ev.Tidy: self._tidy,
            ev.DropStaging: lambda e: self.store.drop_staging(e.digest), ev.FetchManifest: self._fetch_manifest,
            ev.StopManifest: self._stop_manifest, ev.CheckCompat: self._check_compat, ev.PullImages: self._pull,
            ev.StartDownload: self._start_download, ev.StopDownload: lambda e: self._stop_download(),
            ev.Install: self._install, ev.HealthCheck: self._health_check, ev.Discard: self._discard,
            ev.Switch: self._switch_to, ev.AskHealth: self._ask_health}

    @property
    def applied(self) -> Mapping[str, Applied]:
        return self.flow.applied

    @property
    def report(self) -> Report:
        return self.flow.report

    # -- the kinds that run -------------------------------------------------------------
    def load(self) -> Registry:
        """At start, before the agent takes tasks: the kinds of what was applied."""
        self.store.open()
        applied, self.book.taken, extras = self.store.load()
        for name, a in list(applied.items()):
            try:
                self.store.manifest_of(self._env(a))
            except (OSError, ValueError, DeployRefused) as exc:   # removed by hand, or a disk fault
                self.log.warning("deployment: %s %s is not installed whole (%s); installing it again", name,
                                 a.version, exc)
                del applied[name]
        for name in applied:
            info = extras.setdefault(name, {})
            info["restarts"] = int(info.get("restarts", 0)) + 1
        envs = {self._env(a) for a in applied.values()}
        self.store.keep_only(envs, (p.name for p in self.store.staging.iterdir()))   # downloads resume
        self.store.save(applied, self.book.taken, extras)
        self.flow = replace(self.flow, applied=applied, extras=extras)
        return self.compose(applied)

    def _env(self, a: Applied) -> Path:
        return self.store.env_of(a.name, a.version, a.digest)

    def compose(self, applied: Mapping[str, Applied]) -> Registry:
        registry = self.base
        for a in applied.values():
            env = self._env(a)
            manifest = self.store.manifest_of(env)
            registry = registry.with_kinds(*bundle_kinds(manifest, env_lib(env)).kinds.values(),
                                           *self._image_kinds(manifest).values())
        return registry

    @cached_property
    def engine(self) -> Engine | None:
        """This box's container engine (image kinds), looked for once."""
        return Engine.detect()

    def _image_kinds(self, manifest: Manifest) -> dict[str, TaskKind]:
        if not manifest.images:
            return {}
        if self.engine is None:
            raise DeployRefused("incompatible", f"{manifest.label} runs kinds in containers and this agent has "
                                "no container engine; install podman or docker")
        return {k.name: k for k in images.image_kinds(manifest, engine=self.engine, agent=self.me.agent,
                                                      state_dir=self.store.root)}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, *, timeout: float = 10.0) -> None:
        self.client.start(timeout=timeout)
        # The timestamp first: its retained copy arrives before the desired states it vouches for.
        self.client.subscribe(self.topics.deploy_timestamp, 1, timeout=timeout)
        self.client.subscribe(self.topics.deploy_desired_filter, 1, timeout=timeout)
        if self.flow.o.live_check:
            self.client.subscribe(self.health_topic, 1, timeout=timeout)
        self._publish(ev.Publish(reported(self.flow)))
        self._thread = threading.Thread(target=self._run, name=f"deploy-{self.me.agent}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(10.0)
        self.client.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:      # never let the thread die: the kinds that run keep running
                self.log.exception("deployment: unexpected failure; the kinds that ran keep running")
                self._stopping.wait(1.0)
        self._stop_download()

    def _turn(self) -> None:
        """Messages first (a newer desired state before the next step of the
        one under way), then the download, one outcome, and the time."""
        try:
            msg = self._inbox.get(timeout=self._wait())
            while msg is not None:
                self._take(msg)
                msg = self._inbox.get_nowait()
        except queue.Empty:
            pass
        if self._stopping.is_set():
            return
        if self._download is not None:
            self._download_turn(self._download)
        if self._outcomes:
            self._step(self._outcomes.popleft())
        at = wake_at(self.flow)
        if at is not None and at <= self.clock():
            self._step(ev.Tick())
        held = self.gate.due(self.clock())
        if held is not None:
            self._send(held)

    def _wait(self) -> float | None:
        if self._outcomes:
            return 0.0
        waits = [at - self.clock() for at in (wake_at(self.flow), self.gate.wake_at()) if at is not None]
        if self._download is not None:
            waits.append(self._download.poll_s)
        return max(0.0, min(waits)) if waits else None

    def _step(self, event: ev.Event) -> None:
        try:
            self.flow, effects = step(self.flow, event, self.clock())
        except Exception:          # a defect of the flow: never a deployment stuck "in progress"
            self.log.exception("deployment: the flow failed on %s; the job under way is dropped", event)
            self._manifest = None
            self._stop_download()
            self.flow = abandoned(self.flow)
            return
        for effect in effects:
            outcome = self._carry_out(effect)
            if outcome is not None:
                self._outcomes.append(outcome)

    def _carry_out(self, effect: ev.Effect) -> ev.Event | None:
        """One effect; a step's error is its outcome (``Failed``), never the thread's."""
        name = getattr(effect, "step", None)
        try:
            return self._do[type(effect)](effect)
        except DeployRefused as exc:
            if name is None:
                self.log.warning("deployment: %s", exc)
                return None
            return ev.Failed(name, exc.code, str(exc))
        except Exception as exc:
            self.log.exception("deployment: %s failed", type(effect).__name__)
            return None if name is None else ev.Failed(name, "unexpected", f"{type(exc).__name__}: {exc}")

    # -- messages -----------------------------------------------------------------------
    def _take(self, msg: Message) -> None:
        """Route one message: a desired state, a manifest awaited, a chunk, a health reply."""
        t = self.topics
        if msg.topic.startswith(f"{t.root}/deploy/desired/") or msg.topic == t.deploy_timestamp:
            changed, refusals = self.intake.take(msg)
            for exc, serial in refusals:
                self._step(ev.DocumentRefused(exc.code, str(exc), serial))
            if changed:
                self._step(ev.DesiredChanged(tuple(self.book.docs.values())))
        elif self._manifest is not None and msg.topic == t.deploy_bundle(self._manifest) and msg.payload:
            self._step(self._manifest_in(self._manifest, msg.payload))
        elif self._download is not None and msg.topic.startswith(f"{t.root}/deploy/chunks/"):
            self._download.take(msg)
        elif msg.topic == self.health_topic and msg.payload:
            try:      # a reply, by its schema, or nothing (anything may land on the topic)
                reply = Reply.decode(msg.payload)
            except InvalidMessage:
                return
            self._step(ev.HealthReply(reply.to_dict()))

    def _manifest_in(self, digest: str, payload: bytes) -> ev.Event:
        what = f"bundle {digest[:12]}"
        try:
            signed = Signed.decode(payload, what=what)
            signed.verified(self.trust, what=what)
            manifest = Manifest.from_dict(signed.document)
        except DeployRefused as exc:
            return ev.Failed("manifest", exc.code, str(exc))
        if manifest.digest != digest:
            return ev.Failed("manifest", "digest_mismatch", f"{what}: its manifest's digest is {manifest.digest[:12]}")
        return ev.ManifestArrived(manifest)

    def _download_turn(self, download: Download) -> None:
        """The download under way: its window asked for, its progress or its end fed to the flow."""
        failure = download.ask()
        if failure is not None:
            self._stop_download()
            self._step(ev.Failed("download", failure.code, str(failure)))
            return
        shown = (download.progress, download.received)
        if shown != self._shown:
            self._shown = shown
            self._step(ev.Progress(*shown))
        if download.done and self._download is download:
            self._stop_download()
            self._step(ev.Done("download"))

    # -- effects ------------------------------------------------------------------------
    def _publish(self, e: ev.Publish) -> None:
        report = self.gate.offer(e.report, self.clock())
        if report is not None:
            self._send(report)

    def _send(self, report: Report) -> None:
        report = report.but(at=round(self.wall_clock(), 3))
        self.client.publish(self.topics.deploy_reported(self.me.agent), codec.encode(report.to_dict()), qos=1,
                            retain=True)

    def _log(self, e: ev.Log) -> None:
        if not e.limited:
            getattr(self.log, e.level)("%s", e.text)
            return
        left_out = self._refusal_lines.take(self.clock())
        if left_out is not None:
            more = f" ({left_out} more such lines left out)" if left_out else ""
            getattr(self.log, e.level)("%s%s", e.text, more)

    def _save(self, e: ev.Save) -> None:
        self.store.save(e.applied, self.book.taken, e.extras)

    def _tidy(self, e: ev.Tidy) -> None:
        staging = e.staging if e.staging is not None else [p.name for p in self.store.staging.iterdir()]
        self.store.keep_only({self._env(a) for a in e.envs}, staging)

    def _fetch_manifest(self, e: ev.FetchManifest) -> None:
        self._manifest = e.digest
        self.client.subscribe(self.topics.deploy_bundle(e.digest), 1, timeout=None)

    def _stop_manifest(self, e: ev.StopManifest) -> None:
        if self._manifest == e.digest:
            self._manifest = None
        self.client.unsubscribe(self.topics.deploy_bundle(e.digest))

    def _check_compat(self, e: ev.CheckCompat) -> ev.Event:
        m = e.manifest
        compat.check_runs_here(m.label, [(w.file, w.tags, w.requires_python) for w in m.wheels], m.requires_python)
        return ev.Done(e.step)

    def _pull(self, e: ev.PullImages) -> ev.Event:
        images.pull_images(e.manifest, self.engine)        # image kinds: by digest, from their registry
        return ev.Done(e.step)

    def _start_download(self, e: ev.StartDownload) -> ev.Event | None:
        self._stop_download()
        payload, have = self.store.staged(e.manifest)
        if e.manifest.payload_size == 0:
            return ev.Done(e.step)            # image kinds only: nothing travels over MQTT
        self._download = Download(e.manifest, have, open(payload, "r+b"), client=self.client, topics=self.topics,
                                  clock=self.clock, options=self.o, log=self.log)
        self._shown = None
        self._download.ask()
        return None

    def _stop_download(self) -> None:
        download, self._download = self._download, None
        if download is not None:
            download.close()

    def _install(self, e: ev.Install) -> ev.Event:
        m = e.manifest
        wheels = self.store.wheels_from(m, self.store.payload(m.digest))
        env = install_env(self.store.env_of(m.name, m.version, m.digest), wheels)
        (env / "manifest.json").write_bytes(codec.canonical(m.to_dict()))
        return ev.Done(e.step)

    def _health_check(self, e: ev.HealthCheck) -> ev.Event:
        m = e.manifest
        lib = env_lib(self.store.env_of(m.name, m.version, m.digest))
        in_containers = self._checked[m.digest] = self._image_kinds(m)
        for kind, spec in sorted(m.kinds.items()):
            trouble = images.image_health(in_containers[kind], spec.health_args) if kind in in_containers else \
                health_check(lib, kind, spec.health_args, timeout_s=min(spec.timeout_s, self.o.health_timeout_s))
            if trouble is not None:
                return ev.Failed(e.step, "health_check_failed", trouble)
        return ev.Done(e.step)

    def _discard(self, e: ev.Discard) -> None:
        m = e.manifest
        self.store.drop_env(self.store.env_of(m.name, m.version, m.digest))
        for k in self._checked.pop(m.digest, {}).values():
            getattr(k.handler, "remove", lambda: None)()     # a service container its check started

    def _switch_to(self, e: ev.Switch) -> ev.Event:
        self._switch(self.compose(e.applied))
        for a in e.applied.values():
            self._checked.pop(a.digest, None)
        return ev.Done(e.step)

    def _ask_health(self, e: ev.AskHealth) -> None:
        self.client.publish(self.topics.agent_tasks(self.me.agent), self_check.health_task(
            task=e.task, kind=e.kind, args=e.args, reply_to=self.health_topic), qos=1)
