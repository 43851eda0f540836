"""The agent's side of fleet deployment: a :class:`DeployReceiver` made
from the agent's options, and the switch it calls once a new version has
passed its checks (the kinds change on the dispatcher thread, between two
steps of the core; the workers are renewed as they finish what they run)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from fogmesh.broker_url import BrokerUrl
from fogmesh.deploy.desired import Identity
from fogmesh.deploy.env_store import EnvStore
from fogmesh.deploy.receiver import DeployReceiver, ReceiverOptions
from fogmesh.deploy.signing import PublicKey, TrustStore
from fogmesh.edge_agent.events import KindsChanged
from fogmesh.edge_agent.inputs import Input
from fogmesh.edge_agent.journal import default_state_dir
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.edge_agent.workers import WorkerPool
from fogmesh.errors import DeployRefused
from fogmesh.registry import Registry
from fogmesh.topics import Topics

SWITCH_WAIT_S = 10.0


def make_receiver(*, agent_id: str, broker: BrokerUrl | str, options: AgentOptions, topics: Topics, base: Registry,
                  root_tag: str, switch: Callable[[Registry], None], log: Any) -> DeployReceiver:
    o = options
    trust = TrustStore(PublicKey.parse(k) for k in o.trust_keys)
    stamp_trust = TrustStore(PublicKey.parse(k) for k in (*o.trust_keys, *o.timestamp_keys))
    state = Path(o.state_dir) if o.state_dir else default_state_dir()
    return DeployReceiver(broker=broker, identity=Identity(agent_id, o.site, frozenset(o.labels)), topics=topics,
                          store=EnvStore(state / f"deploy-{agent_id}-{root_tag}"), trust=trust, base=base,
                          switch=switch, log=log, wall_clock=o.wall_clock, stamp_trust=stamp_trust,
                          options=ReceiverOptions(max_bundle_bytes=int(o.max_bundle_mb * 1e6)))


class KindsSwitch:
    """Which kinds a deployment switched to last: the dispatcher says when it
    took them (:meth:`taken`), the deployment's thread waits for it."""

    def __init__(self) -> None:
        self._kinds: Registry | None = None
        self._changed = threading.Condition()

    def taken(self, registry: Registry) -> None:
        with self._changed:
            self._kinds = registry
            self._changed.notify_all()

    def wait(self, registry: Registry, *, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._kinds is registry, timeout)


def switch_kinds(registry: Registry, *, events: Any, switch: KindsSwitch, pool: WorkerPool) -> None:
    """Hand the new kinds to the dispatcher and wait until it took them;
    then no worker that loaded an older version takes another task."""
    put: Callable[[Input], None] = events.put
    put(KindsChanged(registry))
    if not switch.wait(registry, timeout=SWITCH_WAIT_S):
        raise DeployRefused("switch_failed", f"the agent did not take the new kinds within {SWITCH_WAIT_S:.0f} s "
                            "(stopping?)")
    pool.renew()
