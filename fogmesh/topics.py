"""The topic tree: fogmesh's public API.

Everything meets on topics under one root (``fog/v1`` unless overridden), so a
whole site can be watched with ``mosquitto_sub -t 'fog/#' -v`` and several
independent fabrics (or several tests) can share one broker under different
roots. Pure functions only: no IO here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fogmesh.topic_names import MAX_TOPIC_BYTES as MAX_TOPIC_BYTES
from fogmesh.topic_names import SAFE_ID as SAFE_ID
from fogmesh.topic_names import is_safe_id as is_safe_id
from fogmesh.topic_names import is_segment as is_segment
from fogmesh.topic_names import topic_matches as topic_matches
from fogmesh.topic_names import validate_publish_topic as validate_publish_topic
from fogmesh.topic_names import validate_root as validate_root
from fogmesh.topic_names import validate_segment as validate_segment

DEFAULT_ROOT = "fog/v1"
SHARE_GROUP = "fogmesh-agents"


@dataclass(frozen=True)
class Topics:
    """Builds and parses every topic of one fogmesh root.

    >>> t = Topics("fog/v1")
    >>> t.presence("pi-1")
    'fog/v1/presence/pi-1'
    >>> t.agent_of_presence("fog/v1/presence/pi-1")
    'pi-1'
    """

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        validate_root(self.root)

    @property
    def tasks(self) -> str:
        """Devices publish task requests here (QoS 1)."""
        return f"{self.root}/tasks"

    def shared_tasks(self, group: str = SHARE_GROUP) -> str:
        """The shared-subscription filter agents use where the broker has them."""
        return f"$share/{group}/{self.root}/tasks"

    def device_tasks(self, device: str) -> str:
        """One device's own task topic: what a broker ACL can tie to the device's
        login (``pattern write fog/v1/tasks/%u``); its replies must go to
        ``replies/{device}``. Agents take tasks from here as from ``tasks``."""
        return f"{self.root}/tasks/{validate_segment(device, what='device id')}"

    @property
    def device_tasks_filter(self) -> str:
        return f"{self.root}/tasks/+"

    def shared_device_tasks(self, group: str = SHARE_GROUP) -> str:
        return f"$share/{group}/{self.root}/tasks/+"

    def device_of_tasks(self, topic: str) -> str | None:
        """The device level of a ``tasks/{device}`` topic (which ``tasks/+``
        matches: possibly empty, over-long or otherwise no valid id; see
        :meth:`own_replies`), or None for any other topic."""
        prefix = f"{self.root}/tasks/"
        if topic.startswith(prefix):
            rest = topic[len(prefix):]
            if "/" not in rest:
                return rest
        return None

    def own_replies(self, device: str) -> str | None:
        """``replies/{device}``, where a task from ``tasks/{device}`` may be
        answered; None when ``device`` is no valid id (such a task is a dead
        letter): never an exception, whatever the topic's level holds."""
        return self.replies(device) if is_segment(device) else None

    def is_task_topic(self, topic: str) -> bool:
        """``tasks`` or ``tasks/{device}``: where devices submit."""
        return topic == self.tasks or self.device_of_tasks(topic) is not None

    @property
    def claims(self) -> str:
        """Agents announce which of them takes a task (brokers without shared subscriptions)."""
        return f"{self.root}/claims"

    def presence(self, agent_id: str) -> str:
        return f"{self.root}/presence/{validate_segment(agent_id, what='agent id')}"

    @property
    def presence_filter(self) -> str:
        return f"{self.root}/presence/+"

    @property
    def presence_prefix(self) -> str:
        return f"{self.root}/presence/"

    @property
    def agents_prefix(self) -> str:
        """Every agent's own space (tasks, inbox, control)."""
        return f"{self.root}/agents/"

    def agent_of_presence(self, topic: str) -> str | None:
        """The agent level of a ``presence/{agent}`` topic (which ``presence/+``
        matches: possibly empty or otherwise no valid id, see
        :func:`is_segment`), or None for any other topic."""
        prefix = f"{self.root}/presence/"
        if topic.startswith(prefix):
            rest = topic[len(prefix):]
            if "/" not in rest:
                return rest
        return None

    def agent_tasks(self, agent_id: str) -> str:
        """Direct submission to one agent (e.g. a camera bound to its own Pi)."""
        return f"{self.root}/agents/{validate_segment(agent_id, what='agent id')}/tasks"

    def agent_inbox(self, agent_id: str) -> str:
        """Offload protocol messages (offer, accept, reject, result) to one agent."""
        return f"{self.root}/agents/{validate_segment(agent_id, what='agent id')}/inbox"

    def agent_topic(self, agent_id: str, name: str) -> str:
        """Another topic in one agent's own space (``agents/{id}/{name}``; e.g.
        ``doctor``, which only ``fogmesh doctor`` uses)."""
        agent = validate_segment(agent_id, what="agent id")
        return f"{self.root}/agents/{agent}/{validate_segment(name, what='topic name')}"

    def below_root(self, relative: str) -> str:
        """``relative`` (e.g. ``actuators/farm-relay/lamp/set``, as the cloud sends
        commands down) under this root."""
        return f"{self.root}/{relative}"

    def agent_control(self, agent_id: str) -> str:
        """Operator commands to one agent (``{"op": "drain"}``)."""
        return f"{self.root}/agents/{validate_segment(agent_id, what='agent id')}/control"

    # -- fleet deployment (fogmesh deploy; topics.md "Deployment") ----------------
    def deploy_desired(self, target: str) -> str:
        """The retained, signed desired state of one target (``all``,
        ``agent:ID``, ``site:NAME``, ``label:L`` -> ``.../agent/ID``)."""
        if target == "all":
            return f"{self.root}/deploy/desired/all"
        kind, _, name = target.partition(":")
        return f"{self.root}/deploy/desired/{validate_segment(kind, what='target kind')}/" \
               f"{validate_segment(name, what='target name')}"

    @property
    def deploy_desired_filter(self) -> str:
        return f"{self.root}/deploy/desired/#"

    @property
    def deploy_timestamp(self) -> str:
        """The fleet's signed timestamp (retained): every target's current
        serial, and until when that holds (:mod:`fogmesh.deploy.freshness`)."""
        return f"{self.root}/deploy/timestamp"

    def deploy_bundle(self, digest: str) -> str:
        """A bundle's signed manifest (retained)."""
        return f"{self.root}/deploy/bundles/{validate_segment(digest, what='bundle digest')}"

    def deploy_chunk(self, digest: str, index: int) -> str:
        """One chunk of a bundle's payload (retained; agents subscribe to the ones they lack)."""
        return f"{self.root}/deploy/chunks/{validate_segment(digest, what='bundle digest')}/{int(index)}"

    def deploy_reported(self, agent_id: str) -> str:
        """An agent's deployment state (retained)."""
        return f"{self.root}/deploy/reported/{validate_segment(agent_id, what='agent id')}"

    @property
    def deploy_reported_filter(self) -> str:
        return f"{self.root}/deploy/reported/+"

    def deploy_history(self, serial: int) -> str:
        """One deployment's record (retained), for ``fogmesh deploy history``."""
        return f"{self.root}/deploy/history/{int(serial)}"

    @property
    def deploy_history_filter(self) -> str:
        return f"{self.root}/deploy/history/+"

    # -- the fleet: joining and revoking boxes (fogmesh join, fogmesh fleet; topics.md "Fleet") --
    def fleet_join(self, nonce: str) -> str:
        """A joining box's request (the join login publishes, the registrar reads)."""
        return f"{self.root}/fleet/join/{validate_segment(nonce, what='join nonce')}"

    @property
    def fleet_join_filter(self) -> str:
        return f"{self.root}/fleet/join/+"

    def fleet_joined(self, nonce: str) -> str:
        """The registrar's answer to one join request (its identity sealed to the box's key, or a refusal)."""
        return f"{self.root}/fleet/joined/{validate_segment(nonce, what='join nonce')}"

    def nonce_of_join(self, topic: str) -> str | None:
        """The nonce level of a ``fleet/join/{nonce}`` topic, or None."""
        prefix = f"{self.root}/fleet/join/"
        rest = topic[len(prefix):] if topic.startswith(prefix) else None
        return rest if rest is not None and "/" not in rest else None

    @property
    def fleet_ca(self) -> str:
        """The site's CA certificate (retained, PEM): what a joining box checks against its token's pin."""
        return f"{self.root}/fleet/ca"

    @property
    def fleet_registrar(self) -> str:
        """The registrar's announcement (retained): its site, state, the keys it trusts."""
        return f"{self.root}/fleet/registrar"

    @property
    def fleet_requests(self) -> str:
        """Signed operator requests to the registrar (``revoke``)."""
        return f"{self.root}/fleet/requests"

    def fleet_identity(self, box: str) -> str:
        """One box's identity record (retained): role, site, labels, active or revoked."""
        return f"{self.root}/fleet/identities/{validate_segment(box, what='box id')}"

    @property
    def fleet_identities_filter(self) -> str:
        return f"{self.root}/fleet/identities/+"

    def box_of_identity(self, topic: str) -> str | None:
        """The box level of a ``fleet/identities/{box}`` topic, or None."""
        prefix = f"{self.root}/fleet/identities/"
        rest = topic[len(prefix):] if topic.startswith(prefix) else None
        return rest if rest is not None and "/" not in rest else None

    # -- devices: sensors, cameras, actuators (the devices issue) ------------------
    def sensor(self, device: str, sensor: str) -> str:
        """Readings of one sensor (push mode), JSON ``{"value": n, "ts": s, ...}``."""
        return (f"{self.root}/sensors/{validate_segment(device, what='device id')}/"
                f"{validate_segment(sensor, what='sensor name')}")

    def sensor_get(self, device: str, sensor: str) -> str:
        """Pull mode: a request here gets one fresh reading on its ``reply_to``."""
        return f"{self.sensor(device, sensor)}/get"

    def sensor_control(self, device: str) -> str:
        """Run-time settings of a sensor device (``{"op": "rate", "hz": 2}``)."""
        return f"{self.root}/sensors/{validate_segment(device, what='device id')}/control"

    def frames(self, device: str, camera: str) -> str:
        """Camera frames: a JSON header line then the raw JPEG bytes (no base64)."""
        return f"{self.sensor(device, camera)}/frame"

    def actuator_set(self, device: str, actuator: str) -> str:
        """Commands to one actuator (``{"op": "pulse", "ms": 3000}``)."""
        return (f"{self.root}/actuators/{validate_segment(device, what='device id')}/"
                f"{validate_segment(actuator, what='actuator name')}/set")

    def actuator_set_filter(self, device: str) -> str:
        return f"{self.root}/actuators/{validate_segment(device, what='device id')}/+/set"

    def actuator_state(self, device: str, actuator: str) -> str:
        """The actuator's state after each command (retained)."""
        return self.actuator_set(device, actuator)[: -len("/set")] + "/state"

    @property
    def actuator_state_filter(self) -> str:
        """Every actuator's retained state (what the dashboard shows)."""
        return f"{self.root}/actuators/+/+/state"

    def actuator_of_state(self, topic: str) -> tuple[str, str] | None:
        """``(device, actuator)`` of an ``actuators/{device}/{actuator}/state`` topic, or None."""
        return self._actuator_of(topic, "state")

    def actuator_of_set(self, topic: str) -> tuple[str, str] | None:
        """(device, actuator) of a command topic, or None."""
        return self._actuator_of(topic, "set")

    def _actuator_of(self, topic: str, leaf: str) -> tuple[str, str] | None:
        prefix, suffix = f"{self.root}/actuators/", f"/{leaf}"
        if topic.startswith(prefix) and topic.endswith(suffix):
            parts = topic[len(prefix):-len(suffix)].split("/")
            if len(parts) == 2 and all(parts):
                return parts[0], parts[1]
        return None

    def pipeline_status(self, agent_id: str, name: str) -> str:
        """A pipeline's counters (frames seen, processed, skipped, actuations), retained."""
        return (f"{self.root}/pipelines/{validate_segment(agent_id, what='agent id')}/"
                f"{validate_segment(name, what='pipeline name')}")

    @property
    def errors(self) -> str:
        """Dead letters: input that could not be answered on a reply topic."""
        return f"{self.root}/errors"

    def audit(self, source: str) -> str:
        """Who did what to the site through ``source`` (the dashboard's actuator presses)."""
        return f"{self.root}/audit/{validate_segment(source, what='audit source')}"

    @property
    def audit_filter(self) -> str:
        return f"{self.root}/audit/+"

    @property
    def replies_filter(self) -> str:
        """Every reply sent below ``replies/`` (where fogmesh clients and devices get answers)."""
        return f"{self.root}/replies/#"

    def is_reply_topic(self, topic: str) -> bool:
        return topic.startswith(f"{self.root}/replies/")

    def carries_identity(self, topic: str) -> bool:
        """Whether ``topic`` is one where what is published speaks for a box
        or steers the fabric (presence, claims, an agent's inbox, control or
        tasks, deployment, pipelines, bridges, tasks, fleet): no task may
        name it as its ``reply_to``, or any login could make an agent publish
        there for it (a task to ``agents/pi-2/tasks`` replying on
        ``presence/pi-2``). An agent's own other topics (``deploy-health``)
        stay allowed."""
        prefix = f"{self.root}/"
        if not topic.startswith(prefix):
            return False
        parts = topic[len(prefix):].split("/")
        if parts[0] in ("presence", "claims", "deploy", "pipelines", "bridge", "tasks", "fleet"):
            return True
        return parts[0] == "agents" and len(parts) >= 3 and parts[2] in ("inbox", "control", "tasks")

    def replies(self, client_id: str) -> str:
        """The conventional reply topic of one device/client (any topic is allowed)."""
        return f"{self.root}/replies/{validate_segment(client_id, what='client id')}"

    def probe(self, token: str) -> str:
        """Used once at agent start to detect shared-subscription support."""
        return f"{self.root}/probe/{validate_segment(token, what='probe token')}"

    def login_probe(self, login: str, name: str) -> str:
        """A login's own probe topic (``fogmesh doctor``): ``probe/{login}/{name}``."""
        return f"{self.probe(login)}/{validate_segment(name, what='probe name')}"

    # -- the cloud bridge (edge side) --------------------------------------------------
    def bridge_health(self, site: str) -> str:
        """A site bridge's health, retained (its will says ``offline``)."""
        return f"{self.root}/bridge/{validate_segment(site, what='site')}"

    @property
    def bridge_filter(self) -> str:
        return f"{self.root}/bridge/+"

    @property
    def bridge_prefix(self) -> str:
        return f"{self.root}/bridge/"

    @property
    def pipelines_prefix(self) -> str:
        return f"{self.root}/pipelines/"

    @property
    def pipelines_filter(self) -> str:
        """Every pipeline's retained counters (``pipelines/{agent}/{name}``)."""
        return f"{self.root}/pipelines/+/+"

    # -- the cloud bridge (cloud side: these Topics are rooted at --cloud-root) --------
    def site_results(self, site: str) -> str:
        """Cloud workers' replies for one site's bridge."""
        return f"{self.site_prefix(site)}results"

    def site_down_prefix(self, site: str) -> str:
        """Commands from the cloud to one site: ``sites/{site}/down/{edge topic}``."""
        return f"{self.site_prefix(site)}down/"

    def site_prefix(self, site: str) -> str:
        return f"{self.root}/sites/{validate_segment(site, what='site')}/"
