"""The box's side of a deployment: desired state in, bundles fetched,
verified, installed and health-checked, the kinds switched, state reported.
Used by the fog agent (and by anything else that runs kinds).

Its own MQTT connection (clean session: everything it needs is retained)
and its own thread: a 5 MB download never waits behind tasks, and tasks
never wait behind it. The old version serves until the new one has passed
every check; ``switch`` (the agent's) then replaces the kinds in one step.
Each step has a timeout and a newer desired state pre-empts the step under
way, so no deployment is ever stuck "in progress".
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fogmesh import codec
from fogmesh.broker_url import BrokerUrl
from fogmesh.containers import Engine
from fogmesh.deploy import compat, desired, images
from fogmesh.deploy.desired import Applied, Change, Desired, Identity
from fogmesh.deploy.downloading import RETRY_S, Download
from fogmesh.deploy.env_store import EnvStore
from fogmesh.deploy.install import env_lib, install_env
from fogmesh.deploy.kinds import bundle_kinds
from fogmesh.deploy.manifest import Manifest, Signed, sha256
from fogmesh.deploy.probe import health_check
from fogmesh.deploy.reported import Report
from fogmesh.deploy.self_check import SelfCheck
from fogmesh.deploy.signing import TrustStore
from fogmesh.errors import DeployRefused, FogmeshError
from fogmesh.mqtt import Message, MqttClient
from fogmesh.registry import Registry, TaskKind
from fogmesh.topics import Topics

log = logging.getLogger(__name__)

__all__ = ["DeployReceiver", "ReceiverOptions"]


def _claimed_serial(payload: bytes) -> int:
    """The serial a refused document claims, for the report only (so the fleet
    counters count this agent as failed for it); never taken as applied."""
    try:
        serial = codec.decode(payload)["signed"]["serial"]
    except Exception:
        return 0
    # A whole number a report can carry (a hostile 1e308 would make every later report fail to encode).
    return serial if isinstance(serial, int) and not isinstance(serial, bool) and 0 <= serial <= 2 ** 53 else 0


class Preempted(Exception):
    """A newer desired state arrived: the step under way is dropped."""


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
                 log: logging.LoggerAdapter[Any] | logging.Logger = log,
                 options: ReceiverOptions = ReceiverOptions(),
                 wall_clock: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic) -> None:
        self.me, self.topics, self.store, self.trust, self.base = identity, topics, store, trust, base
        self._switch, self.log, self.o = switch, log, options
        self.live_check = live_check        # after the switch, send the box its own health tasks
        self.wall_clock, self.clock = wall_clock, clock
        self._inbox: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.client = MqttClient(broker, client_id=f"fd-{identity.agent}-{sha256(topics.root.encode())[:8]}",
                                 clean_session=True, on_message=self._inbox.put, mqtt5=options.mqtt5,
                                 reconnect_max=2.0)
        self.docs: dict[str, Desired] = {}
        self.applied: dict[str, Applied] = {}
        self.taken: dict[str, int] = {}
        self.extras: dict[str, Any] = {}
        self._failed: dict[tuple[str, str | None, int], float] = {}   # change -> when to try again
        self._dirty = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.report = Report(agent=identity.agent, site=identity.site, labels=tuple(sorted(identity.labels)))
        self._fetch: Download | None = None
        self._manifest_wait: tuple[str, list[bytes]] | None = None
        self._received = 0          # chunk bytes of the download under way (the report's ``received``)
        self.self_check = SelfCheck(agent=identity.agent, topics=topics, timeout_s=options.health_timeout_s)

    # -- the kinds that run -------------------------------------------------------------
    def load(self) -> Registry:
        """At start, before the agent takes tasks: the kinds of what was applied."""
        self.store.open()
        self.applied, self.taken, self.extras = self.store.load()
        for name, a in list(self.applied.items()):
            try:
                self.store.manifest_of(self._env(a))
            except (OSError, ValueError, DeployRefused) as exc:   # removed by hand, or a disk fault
                self.log.warning("deployment: %s %s is not installed whole (%s); installing it again", name,
                                 a.version, exc)
                del self.applied[name]
        for name in self.applied:
            info = self.extras.setdefault(name, {})
            info["restarts"] = int(info.get("restarts", 0)) + 1
        envs = {self._env(a) for a in self.applied.values()}
        self.store.keep_only(envs, (p.name for p in self.store.staging.iterdir()))   # downloads resume
        self.store.save(self.applied, self.taken, self.extras)
        return self.compose(self.applied)

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
        self.client.subscribe(self.topics.deploy_desired_filter, 1, timeout=timeout)
        if self.live_check:
            self.client.subscribe(self.self_check.topic, 1, timeout=timeout)
        self._publish_report()
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

    def _turn(self) -> None:
        """Wait for a message or a retry, take it, converge if something changed."""
        retry = min((at for at in self._failed.values() if at != float("inf")), default=None)
        wait = None if retry is None else max(0.0, retry - self.clock())
        try:
            msg = self._inbox.get(timeout=wait)
        except queue.Empty:
            msg = None
        if msg is not None:
            self._take(msg)
        if self._stopping.is_set():
            return
        now = self.clock()
        due = [k for k, at in self._failed.items() if at <= now]
        for k in due:
            del self._failed[k]
        if self._dirty or due:
            try:
                self._converge()
            except FogmeshError as exc:      # a step's error not mapped to a report: keep serving
                self.log.warning("deployment: %s", exc)

    # -- messages -----------------------------------------------------------------------
    def _take(self, msg: Message) -> None:
        """Route one message: a desired state, a manifest awaited, a chunk awaited."""
        t = self.topics
        if msg.topic.startswith(f"{t.root}/deploy/desired/"):
            self._take_desired(msg)
        elif self._manifest_wait is not None and msg.topic == t.deploy_bundle(self._manifest_wait[0]):
            if msg.payload:
                self._manifest_wait[1].append(msg.payload)
        elif self._fetch is not None and msg.topic.startswith(f"{t.root}/deploy/chunks/"):
            self._fetch.take(msg)
        elif msg.topic == self.self_check.topic and msg.payload:
            self.self_check.take(msg.payload)

    def _take_desired(self, msg: Message) -> None:
        if not msg.payload:
            gone = next((k for k in self.docs if self.topics.deploy_desired(k) == msg.topic), None)
            if gone is not None:
                del self.docs[gone]
                self._dirty = True
            return
        try:
            signed = Signed.decode(msg.payload, what=f"the desired state on {msg.topic}")
            signed.verified(self.trust, what=f"the desired state on {msg.topic}")
            doc = Desired.from_dict(signed.document)
            if self.topics.deploy_desired(doc.target) != msg.topic:
                raise DeployRefused("bad_document", f"a desired state for {doc.target} was published on {msg.topic}")
            if not self.me.matches(doc.target):
                return
            desired.check_serial(doc, self.taken)
        except DeployRefused as exc:
            self.log.warning("deployment refused: %s", exc)
            self._say(state="refused", reason=exc.code, detail=str(exc), bundle=None, version=None, progress=None,
                      desired_serial=max(self.report.desired_serial, _claimed_serial(msg.payload)))
            return
        known = self.docs.get(doc.target)
        if known is None or known.serial != doc.serial:
            self.docs[doc.target] = doc
            self.taken[doc.target] = doc.serial
            self._dirty = True

    def _pump(self, until: float) -> None:
        """Take messages until ``until``; a newer desired state pre-empts."""
        try:
            msg = self._inbox.get(timeout=max(0.0, until - self.clock()))
        except queue.Empty:
            return
        if msg is None:
            raise Preempted()
        self._take(msg)
        if self._dirty:
            raise Preempted()

    # -- converging -------------------------------------------------------------------
    def _converge(self) -> None:
        self._dirty = False
        wanted = desired.effective(self.docs.values(), self.me)
        self.report = self.report.but(desired_serial=max(self.report.desired_serial, wanted.serial))
        failed = False
        todo = desired.changes(wanted, self.applied)
        # A download no change wants any more (pre-empted by a newer state) is dropped.
        self.store.keep_only({self._env(a) for a in self.applied.values()},
                             {c.want.digest for c in todo if c.want.digest})
        for change in todo:
            key = (change.name, change.want.digest, change.serial)
            if key in self._failed:
                failed = True
                continue
            try:
                self._apply(change)
            except Preempted:
                self._dirty = True
                return
            except DeployRefused as exc:
                failed = True
                retry = exc.code in ("download_stalled", "manifest_missing", "no_space", "image_pull_failed")
                self._failed[key] = self.clock() + RETRY_S if retry else float("inf")
                state = "rolled_back" if exc.code == "health_check_failed" else \
                    "failed" if retry or exc.code == "install_failed" else "refused"
                self.log.warning("deployment of %s %s: %s (%s)", change.name, change.want.version or "removal",
                                 state, exc)
                if not retry:
                    self.store.drop_staging(change.want.digest or "")
                self._say(state=state, reason=exc.code, detail=str(exc), bundle=change.name,
                          version=change.want.version, progress=None)
        self.store.save(self.applied, self.taken, self.extras)
        if not failed:
            self._say(state="running" if self.applied else "idle", reason=None, detail="", bundle=None,
                      version=None, progress=None, applied_serial=wanted.serial)

    def _apply(self, change: Change) -> None:
        ref = change.want
        if ref.absent:
            self._switch_to(change.name, None)
            return
        assert ref.digest is not None and ref.version is not None
        desired.check_downgrade(change, self.applied)
        self._say(state="downloading", bundle=change.name, version=ref.version, reason=None, detail="", progress=0.0,
                  received=0)
        if ref.size > self.o.max_bundle_bytes:
            raise DeployRefused("too_large", f"{change.name} {ref.version} is {ref.size / 1e6:.1f} MB, over this "
                                f"agent's --max-bundle-mb {self.o.max_bundle_bytes / 1e6:g}")
        manifest = self._fetch_manifest(ref.digest)
        if (manifest.name, manifest.version) != (change.name, ref.version):
            raise DeployRefused("bad_bundle", f"bundle {ref.digest[:12]} is {manifest.label}, not the "
                                f"{change.name} {ref.version} the desired state names")
        if manifest.payload_size > self.o.max_bundle_bytes:
            raise DeployRefused("too_large", f"{manifest.label} is {manifest.payload_size / 1e6:.1f} MB, over "
                                f"this agent's --max-bundle-mb {self.o.max_bundle_bytes / 1e6:g}")
        compat.check_runs_here(manifest.label, [(w.file, w.tags, w.requires_python) for w in manifest.wheels],
                               manifest.requires_python)
        images.pull_images(manifest, self.engine)        # image kinds: by digest, from their registry
        payload = self._download(manifest)
        self._say(state="installing", progress=None, received=self._received)
        wheels = self.store.wheels_from(manifest, payload)
        env = install_env(self.store.env_of(manifest.name, manifest.version, manifest.digest), wheels)
        (env / "manifest.json").write_bytes(codec.canonical(manifest.to_dict()))
        self._say(state="health-check")
        in_containers = self._image_kinds(manifest)
        for kind, spec in sorted(manifest.kinds.items()):
            trouble = images.image_health(in_containers[kind], spec.health_args) if kind in in_containers else \
                health_check(env_lib(env), kind, spec.health_args, timeout_s=min(spec.timeout_s,
                                                                                  self.o.health_timeout_s))
            if trouble is not None:
                self.store.drop_env(env)
                for k in in_containers.values():
                    getattr(k.handler, "remove", lambda: None)()     # a service container it started
                raise DeployRefused("health_check_failed", f"{manifest.label}: {trouble}; the version that ran "
                                    "before keeps serving")
        before, before_extras = self.applied.get(change.name), dict(self.extras.get(change.name, {}))
        keep = {self._env(before)} if before else set()     # until the new one has answered here
        self._switch_to(change.name, Applied(change.name, manifest.version, manifest.digest, change.serial),
                        extras={"kinds": sorted(manifest.kinds), "restarts": 0}, keep=keep)
        self.store.drop_staging(manifest.digest)
        trouble = self.self_check.run(manifest, publish=lambda t, p: self.client.publish(t, p, qos=1),
                                      pump=self._pump, clock=self.clock) if self.live_check else None
        if trouble is not None:
            self._switch_to(change.name, before, extras=before_extras)
            raise DeployRefused("health_check_failed", f"{manifest.label}: {trouble} after the switch; switched "
                                f"back to {before.version if before else 'not having it'}")
        self.store.keep_only({self._env(a) for a in self.applied.values()},      # it answered here: the old goes
                             (p.name for p in self.store.staging.iterdir()))

    def _switch_to(self, name: str, new: Applied | None, *, extras: Mapping[str, Any] | None = None,
                   keep: Iterable[Path] = ()) -> None:
        """Switch: the kinds of ``applied`` with ``name`` replaced (or removed);
        environments no longer named go, but for ``keep``."""
        applied = dict(self.applied)
        if new is None:
            applied.pop(name, None)
            self.extras.pop(name, None)
        else:
            applied[name] = new
            self.extras[name] = dict(extras or {})
        if applied != self.applied:
            self._switch(self.compose(applied))
            self.log.info("deployment: %s", f"{name} {new.version} runs" if new else f"{name} removed")
        self.applied = applied
        self.store.save(self.applied, self.taken, self.extras)
        self.store.keep_only({self._env(a) for a in applied.values()} | set(keep),
                             (p.name for p in self.store.staging.iterdir()))

    def _fetch_manifest(self, digest: str) -> Manifest:
        topic = self.topics.deploy_bundle(digest)
        got: list[bytes] = []
        self._manifest_wait = (digest, got)
        try:
            self.client.subscribe(topic, 1, timeout=None)
            deadline = self.clock() + self.o.manifest_timeout_s
            while not got:
                if self.clock() >= deadline:
                    raise DeployRefused("manifest_missing", f"bundle {digest[:12]}'s manifest did not arrive within "
                                        f"{self.o.manifest_timeout_s:.0f} s (is it still retained on {topic}?)")
                self._pump(deadline)
        finally:
            self._manifest_wait = None
            self.client.unsubscribe(topic)
        signed = Signed.decode(got[0], what=f"bundle {digest[:12]}")
        signed.verified(self.trust, what=f"bundle {digest[:12]}")
        manifest = Manifest.from_dict(signed.document)
        if manifest.digest != digest:
            raise DeployRefused("digest_mismatch", f"bundle {digest[:12]}: its manifest's digest is "
                                f"{manifest.digest[:12]}")
        return manifest

    def _download(self, manifest: Manifest) -> Path:
        payload, have = self.store.staged(manifest)
        if manifest.payload_size == 0:
            return payload                    # image kinds only: nothing travels over MQTT
        with open(payload, "r+b") as f:
            download = self._fetch = Download(manifest, have, f, client=self.client, topics=self.topics,
                                              clock=self.clock, options=self.o, log=self.log)
            try:
                download.run(pump=self._pump, say=self._say)
            finally:
                self._received, self._fetch = download.received, None
        return payload

    # -- reporting ----------------------------------------------------------------------
    def _say(self, **changes: Any) -> None:
        bundles = {a.name: {"version": a.version, "serial": a.serial, **self.extras.get(a.name, {})}
                   for a in self.applied.values()}
        self.report = self.report.but(bundles=bundles, at=round(self.wall_clock(), 3), **changes)
        self._publish_report()

    def _publish_report(self) -> None:
        self.client.publish(self.topics.deploy_reported(self.me.agent), codec.encode(self.report.to_dict()),
                            qos=1, retain=True)
