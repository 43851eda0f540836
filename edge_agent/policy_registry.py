"""Finding placement policies by name: the built-ins and the ``fogmesh.policies``
entry points, so a site can ship its own policy as a package (``--policy NAME``)."""

from __future__ import annotations

from importlib.metadata import entry_points

from fogmesh.edge_agent.placement import (
    ConsolidatePolicy,
    EnergyPolicy,
    LeastLoadedPolicy,
    LocalPolicy,
    PlacementPolicy,
    RandomPolicy,
    RoundRobinPolicy,
)

POLICY_ENTRY_POINT_GROUP = "fogmesh.policies"

BUILTIN_POLICIES = {"local": LocalPolicy, "round-robin": RoundRobinPolicy, "random": RandomPolicy,
                    "least-loaded": LeastLoadedPolicy, "energy": EnergyPolicy,
                    "consolidate": ConsolidatePolicy}


def make_policy(name: str, **options: object) -> PlacementPolicy:
    """A built-in policy, or one installed under the ``fogmesh.policies`` entry points."""
    factory = BUILTIN_POLICIES.get(name)
    if factory is None:
        for ep in entry_points(group=POLICY_ENTRY_POINT_GROUP):
            if ep.name == name:
                factory = ep.load()
                break
    if factory is None:
        known = sorted(set(BUILTIN_POLICIES) | {ep.name for ep in entry_points(group=POLICY_ENTRY_POINT_GROUP)})
        raise ValueError(f"unknown placement policy {name!r}; choose one of: {', '.join(known)}")
    policy = factory(**options)
    if not isinstance(policy, PlacementPolicy):
        raise TypeError(f"policy {name!r} does not implement place() and accepts()")
    return policy
