"""The cloud bridge: heavy tasks from the fog up to a cloud broker, results and
actuation commands down (nothing else comes down: :func:`command_down`),
store-and-forward in between.

To the fog it is one more peer, ``bridge-{site}``: agents see its health on
``{root}/bridge/{site}`` and offer it heavy tasks through the offload protocol
(its inbox ``{root}/agents/bridge-{site}/inbox``). It commits a task to its
outbox before accepting it, forwards it to ``{cloud_root}/tasks`` on the cloud
broker (where cloud workers share it through a shared subscription), and
sends the cloud's reply back to the origin agent, which answers the device
(``tier: "cloud"``). While the uplink is down the outbox fills (bounded) and
is replayed in order when it returns. Full outbox, or a deadline the outage
makes impossible: the task goes back to the fog (``--fallback fog``, a reject)
or gets a clear error reply (``--fallback error``). Never a silent drop.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from fogmesh import codec
from fogmesh.announcements import BridgeHealth, Presence
from fogmesh.cloud_bridge.aggregate import Aggregator
from fogmesh.cloud_bridge.bookkeeping import Bookkeeping
from fogmesh.cloud_bridge.forwarding import Forwarding
from fogmesh.cloud_bridge.inputs import BridgeInput, FromCloud, FromEdge, UplinkChanged
from fogmesh.cloud_bridge.store import DiskLow, Outbox, StoreFull
from fogmesh.cloud_bridge.translate import (
    cloud_task,
    command_down,
    fallback_error,
    key_of_result,
    outbox_key,
    refusal,
    result_for_fog,
    task_of,
    uplink_topic,
)
from fogmesh.cloud_bridge.uplink import Uplink
from fogmesh.errors import InvalidMessage, StorageError
from fogmesh.messages import Reply
from fogmesh.mqtt import BrokerUrl, Message, MqttClient, Will, ensure_id_carried
from fogmesh.offers import Offer, OfferReply, Result, decode_inbox
from fogmesh.refusals import Refusals
from fogmesh.service_notify import ServiceNotifier
from fogmesh.topics import DEFAULT_ROOT, Topics, validate_segment

log = logging.getLogger(__name__)
DEFAULT_CLOUD_ROOT = "fogmesh/v1"


class _BridgeLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[bridge {self.extra['site']}] {msg}", kwargs  # type: ignore[index]


class Bridge:
    def __init__(self, *, site: str, edge: BrokerUrl | str, cloud: BrokerUrl | str,
                 root: str = DEFAULT_ROOT, cloud_root: str = DEFAULT_CLOUD_ROOT,
                 store_path: str | Path, max_rows: int = 100_000, max_bytes: int = 256 * 1024 * 1024,
                 fallback: str = "fog", kinds: tuple[str, ...] = ("sha256", "sleep", "echo", "stats", "sum"),
                 aggregate: tuple[tuple[str, float], ...] = (), health_period: float = 2.0,
                 resend_after_s: float = 60.0,
                 wall_clock: Callable[[], float] = time.time,
                 notifier: ServiceNotifier | None = None) -> None:
        validate_segment(site, what="site")
        if fallback not in ("fog", "error"):
            raise ValueError("fallback must be 'fog' or 'error'")
        self.site = site
        self.agent_id = f"bridge-{site}"
        self.topics = Topics(root)
        self.cloud_topics = Topics(cloud_root)
        self.fallback = fallback
        self.kinds = tuple(sorted(kinds))
        self.health_period = health_period
        self.now = wall_clock
        self.log = _BridgeLog(log, {"site": site})
        self.notifier = notifier or ServiceNotifier(None)    # systemd: fed by _loop only
        self.outbox = Outbox(store_path, max_rows=max_rows, max_bytes=max_bytes)
        self.aggregator = Aggregator(tuple(aggregate))
        self.results_topic = self.cloud_topics.site_results(site)
        self.down_prefix = self.cloud_topics.site_down_prefix(site)
        self.health_topic = self.topics.bridge_health(site)
        self.counters = {"accepted": 0, "rejected": 0, "fallback_errors": 0, "forwarded": 0,
                         "results": 0, "duplicate_results": 0, "commands_down": 0}
        self.refusals = Refusals()
        self._events: queue.SimpleQueue[BridgeInput] = queue.SimpleQueue()
        self._health_at = -1e9
        self._deadlines_at = -1e9
        self.forwarding: Forwarding[Message] = Forwarding()    # results on their way to the fog
        self.books = Bookkeeping(self.outbox, log=self.log, say_health=self._health_now)
        self.uplink = Uplink(self.outbox, self.books, counters=self.counters, resend_after_s=resend_after_s,
                             send=lambda payload: self.cloud.publish(self.cloud_topics.tasks, payload, qos=1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        tag = hashlib.sha1(f"{root}|{cloud_root}".encode()).hexdigest()[:8]
        will = BridgeHealth(site=site, agent=self.agent_id, state="offline", ts=self.now(),
                            kinds=tuple(self.kinds)).encode()
        self.edge = MqttClient(edge, client_id=f"fb-{site}-{tag}", clean_session=False, manual_ack=True,
                               will=Will(self.health_topic, will), on_message=self._on_edge)
        self.cloud = MqttClient(cloud, client_id=f"fbc-{site}-{tag}", clean_session=False, manual_ack=True,
                                on_message=self._on_cloud, on_connection=self._on_cloud_link)

    # -- lifecycle -----------------------------------------------------------
    def start(self, *, timeout: float = 10.0, wait_for_broker: bool = False) -> Bridge:
        """Connect to the edge broker (``wait_for_broker``: however long it
        takes, logged) and start; the uplink may come later."""
        if wait_for_broker:
            self.edge.start_waiting(self._waiting_for_broker)
        else:
            self.edge.start(timeout=timeout)
        ensure_id_carried(self.edge.url, self.topics, what="site", name=self.site, timeout=timeout)
        self.edge.subscribe(self.topics.agent_inbox(self.agent_id), 1, timeout=timeout)
        for pattern, _ in self.aggregator.rules:
            self.edge.subscribe(pattern, 0, timeout=timeout)
        self.cloud.start(timeout=None)     # the uplink may be down: buffer until it is up
        self.cloud.subscribe(self.results_topic, 1, timeout=None)
        self.cloud.subscribe(self.cloud_topics.presence_filter, 1, timeout=None)
        self.cloud.subscribe(self.down_prefix + "#", 1, timeout=None)
        self._thread = threading.Thread(target=self._loop, name=f"bridge-{self.site}", daemon=True)
        self._thread.start()
        self.log.info("up: edge %s root %s, cloud %s root %s, backlog %d", self.edge.url,
                      self.topics.root, self.cloud.url, self.cloud_topics.root, self.outbox.rows)
        self.notifier.ready(self.status_line())
        return self

    def _waiting_for_broker(self) -> None:
        self.log.warning("waiting for the edge broker at %s", self.edge.url)
        self.notifier.waiting(f"waiting for the edge broker at {self.edge.url}", extend_s=30)

    def status_line(self) -> str:
        """One line for ``systemctl status``: "online, uplink down, backlog 12"."""
        state = "degraded" if self.books.problem else "online"
        line = f"{state}, uplink {'up' if self.uplink.up else 'down'}, backlog {self.outbox.rows}"
        return f"{line}: {self.books.problem}" if self.books.problem else line

    def stop(self) -> None:
        self.notifier.stopping(f"stopping, backlog {self.outbox.rows}")
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        self._publish_health(state="offline")
        self.edge.stop()
        self.cloud.stop()
        self.outbox.close()

    # -- inputs (network threads) ------------------------------------------------
    def _on_edge(self, m: Message) -> None:
        self._events.put(FromEdge(m))

    def _on_cloud(self, m: Message) -> None:
        self._events.put(FromCloud(m))

    def _on_cloud_link(self, up: bool) -> None:
        self._events.put(UplinkChanged(up))

    # -- the dispatcher thread ---------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            event: BridgeInput | None
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                event = None
            self.notifier.beat(time.monotonic(), self.status_line)   # only this loop feeds the watchdog
            try:
                if isinstance(event, FromEdge):
                    self._edge_message(event.message)
                elif isinstance(event, FromCloud):
                    self._cloud_message(event.message)
                elif isinstance(event, UplinkChanged):
                    self._link(event.up)
                self._tick()
            except Exception:       # one bad message must not stop the bridge
                self.log.exception("error while handling %s", type(event).__name__ if event else "tick")

    def _link(self, up: bool) -> None:
        self.log.info("uplink %s; backlog %d task(s)", "up" if up else "down", self.outbox.rows)
        self.uplink.changed(up)
        self._health_at = -1e9

    def _tick(self) -> None:
        for message, key in self.forwarding.arrived():
            self.cloud.ack(message)
            self.books.remove(key)
        now = self.now()
        self.uplink.confirmed(now)
        self.books.retry(now)
        for summary in self.aggregator.flush(now):
            self._uplink_summary(summary)
        if not self.uplink.up and now - self._deadlines_at >= 0.5:
            self._deadlines_at = now
            self._expire_deadlines(now)
        self.uplink.resend_stale(now)
        if now - self._health_at >= self.health_period:
            self._publish_health()

    # -- fog side: offers ------------------------------------------------------------
    def _edge_message(self, m: Message) -> None:
        if m.topic == self.topics.agent_inbox(self.agent_id):
            try:
                msg = decode_inbox(m.payload)
            except InvalidMessage as exc:
                msg = None
                self._refuse("inbox", m.topic, exc.message)
            if isinstance(msg, Offer):
                self._on_offer(msg)
            self.edge.ack(m)
            return
        try:
            value = codec.decode(m.payload)
        except InvalidMessage:
            value = None
        for summary in self.aggregator.add(m.topic, value, len(m.payload), self.now()):
            self._uplink_summary(summary)
        self.edge.ack(m)

    def _on_offer(self, offer: Offer) -> None:
        task = offer.task
        inbox = self.topics.agent_inbox(offer.origin)
        key = outbox_key(offer.origin, task.id)
        reason = refusal(task, kinds=self.kinds, link_up=self.uplink.up, cloud_id=f"{self.site}/{key}")
        if not reason:
            now = self.now()
            up = cloud_task(task, site=self.site, key=key, results_topic=self.results_topic)
            deadline = now + task.deadline_ms / 1000 if task.deadline_ms else None
            try:
                fresh = self.outbox.add(task_id=key, origin=offer.origin, offer=offer.offer,
                                        payload=up.encode(), created=now, deadline=deadline)
            except DiskLow as exc:
                reason = "busy"
                self.books.failed(exc)
            except StoreFull as exc:
                reason = "busy"
                self.log.warning("%s; task %s goes back to the fog", exc, task.id)
            except StorageError as exc:     # the disk refused the write (full, read-only)
                reason = "busy"
                self.books.failed(exc)
            else:
                self.books.ok()
                self.edge.publish(inbox, OfferReply("accept", offer.offer, task.id, self.agent_id).encode())
                if fresh:
                    self.counters["accepted"] += 1
                    self.uplink.take(key, up.encode())
                return
        self._give_back(offer.origin, offer.offer, task.id, reason)

    def _give_back(self, origin: str, offer: str, task_id: str, reason: str) -> None:
        """Fallback: back to the fog (a reject, the origin re-places it) or an error reply."""
        inbox = self.topics.agent_inbox(origin)
        if self.fallback == "fog" or reason in ("unknown_kind", "bad_offer"):
            self.counters["rejected"] += 1
            self.edge.publish(inbox, OfferReply("reject", offer, task_id, self.agent_id, reason).encode())
            return
        self.counters["fallback_errors"] += 1
        reply = fallback_error(task_id, reason, worker=self.agent_id)
        self.edge.publish(inbox, Result(offer, task_id, self.agent_id, reply).encode())

    def _expire_deadlines(self, now: float) -> None:
        try:
            rows = self.outbox.queued(limit=10_000)
        except StorageError as exc:
            self.books.failed(exc)
            return
        for row in rows:
            if row.deadline is not None and now >= row.deadline and row.task_id not in self.books.unremoved:
                self.books.remove(row.task_id)
                self._give_back(row.origin, row.offer, task_of(row.task_id), "deadline")

    # -- cloud side: results and commands ----------------------------------------------
    def _cloud_message(self, m: Message) -> None:
        if m.topic == self.results_topic:
            try:
                reply = Reply.decode(m.payload)
            except InvalidMessage:
                reply = None
            key = key_of_result(reply.id, self.site) if reply is not None else None
            if reply is not None and key is not None:
                try:
                    row = self.outbox.get(key)
                except StorageError as exc:       # unreadable now: the cloud redelivers it
                    self.books.failed(exc)
                    return
                self.uplink.answered(key)
                if row is None or key in self.forwarding or key in self.books.unremoved:
                    self.counters["duplicate_results"] += 1
                else:
                    task_id = task_of(key)
                    back = result_for_fog(reply, key)
                    try:
                        self.outbox.mark_answered(key)
                    except StorageError as exc:   # kept 'sent': a resend's result is a duplicate
                        self.books.failed(exc)
                    delivery = self.edge.publish(self.topics.agent_inbox(row.origin),
                                                 Result(row.offer, task_id, self.agent_id, back).encode())
                    assert delivery is not None      # untagged publishes are never withdrawn
                    self.forwarding.add(delivery, m, key)   # acknowledged once the edge broker has it
                    self.counters["results"] += 1
                    return
        elif (worker := self.cloud_topics.agent_of_presence(m.topic)) is not None:
            try:      # who it is: the topic, never the payload
                state = Presence.decode(m.payload, agent=worker).state if m.payload else None
            except InvalidMessage as exc:
                state = None
                self._refuse("presence", m.topic, exc.message)
            self.uplink.worker(worker, online=state == "online")
        elif m.topic.startswith(self.down_prefix):
            # Only what topics.md documents for down/ (actuator commands): a cloud-side
            # publisher must not drain the site's agents or replace its desired state.
            down = command_down(m.topic[len(self.down_prefix):], root=self.topics.root)
            if down is None:
                self._refuse("command down", m.topic, "only actuator commands come down from the cloud "
                             "(down/actuators/{device}/{actuator}/set)")
            else:
                self.edge.publish(down, m.payload, qos=1)
                self.counters["commands_down"] += 1
        self.cloud.ack(m)

    def _refuse(self, kind: str, topic: str, reason: str) -> None:
        """Malformed or forged input: counted, logged at most once a minute."""
        self.refusals.refuse(kind, topic, reason)
        said = self.refusals.due(time.monotonic())
        if said is not None:
            self.log.warning("%s", said)

    def _uplink_summary(self, summary: dict[str, Any]) -> None:
        payload = codec.encode(summary)
        site_prefix = self.cloud_topics.site_prefix(self.site)
        topic = uplink_topic(summary["topic"], root=self.topics.root, site_prefix=site_prefix)
        self.cloud.publish(topic, payload, qos=1)
        self.aggregator.sent(len(payload))

    # -- health ------------------------------------------------------------------------
    def health(self, state: str = "online") -> BridgeHealth:
        try:
            oldest = self.outbox.oldest_created()
        except StorageError:
            oldest = None
        if state == "online" and self.books.problem:
            state = "degraded"
        return BridgeHealth(site=self.site, agent=self.agent_id, state=state,
                            reason=self.books.problem if state == "degraded" else None,
                            link="up" if self.uplink.up else "down", backlog=self.outbox.rows,
                            backlog_bytes=self.outbox.bytes,
                            oldest_age_s=round(self.now() - oldest, 3) if oldest else 0.0,
                            kinds=tuple(self.kinds), ts=self.now(), cloud_workers=len(self.uplink.workers),
                            bytes_in=self.aggregator.bytes_in, bytes_up=self.aggregator.bytes_up)

    @property
    def storage_problem(self) -> str | None:
        """Why the outbox's disk refuses writes (None: it does not)."""
        return self.books.problem

    def _health_now(self) -> None:
        """Announce health at the next look (a change to say at once)."""
        self._health_at = -1e9

    def _publish_health(self, state: str = "online") -> None:
        self.edge.publish(self.health_topic, self.health(state).encode(), qos=1, retain=True)
        self._health_at = self.now()
