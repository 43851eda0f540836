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
from fogmesh.edge_agent.inputs import Input, KindsReplaced
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


def switch_kinds(registry: Registry, *, events: Any, pool: WorkerPool) -> None:
    """Hand the new kinds to the dispatcher and wait until it took them;
    then no worker that loaded an older version takes another task."""
    done = threading.Event()
    put: Callable[[Input], None] = events.put
    put(KindsReplaced(registry, done.set))
    if not done.wait(SWITCH_WAIT_S):
        raise DeployRefused("switch_failed", f"the agent did not take the new kinds within {SWITCH_WAIT_S:.0f} s "
                            "(stopping?)")
    pool.renew()
