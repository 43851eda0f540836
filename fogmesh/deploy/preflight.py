"""What ``fogmesh deploy`` checks before it publishes anything. Pure.

An agent refuses a bundle or a desired state whose signature does not hold
or whose key it does not trust; published anyway, such a push leaves the
target's retained state as a document every agent refuses (agents that join
later get nothing), and its automatic rollback, signed with the same key,
is refused too. So the command checks first, as the agents will:

- the bundle's manifest carries a signature that holds, by a key the
  agents trust (``--trust-key``, repeatable; by default the public half of
  ``--key``, so a bundle signed by another key is refused);
- the key that signs the desired state (``--key``) is one of those;
- every targeted agent whose report lists the keys it trusts (``trust``:
  key ids, reported since this addition) trusts both keys;
- the target names at least one agent the operator has seen report
  (unless ``--wait-for-agents``: a target for agents that start later).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from fogmesh.deploy.manifest import Signed, Verifier
from fogmesh.deploy.reported import Report
from fogmesh.errors import DeployRefused

NOTHING = "; nothing was published"

__all__ = ["check_bundle", "check_key", "check_target"]


def check_bundle(signed: Signed, trust: Verifier, *, what: str) -> str:
    """The id of the trusted key whose signature over the manifest holds."""
    try:
        return signed.verified(trust, what=what)
    except DeployRefused as exc:
        raise DeployRefused(exc.code, f"{exc}{NOTHING}") from exc


def check_key(key_id: str, trusted: Iterable[str]) -> None:
    """The signing key is among the keys the agents trust."""
    ids = sorted(trusted)
    if key_id not in ids:
        raise DeployRefused("unknown_key", f"the signing key {key_id} (--key) is not one of the keys the agents "
                            f"trust ({', '.join(ids)}; --trust-key): they would refuse its desired states and "
                            f"its rollbacks{NOTHING}")


def check_target(target: str, reports: Iterable[Report], *, key_ids: Sequence[str],
                 wait_for_agents: bool) -> list[Report]:
    """The reports of the agents ``target`` names; refused if none (unless
    ``wait_for_agents``) or if one says it trusts none of ``key_ids``'s keys."""
    seen = list(reports)
    mine = sorted((r for r in seen if r.identity.matches(target)), key=lambda r: r.agent)
    if not mine and not wait_for_agents:
        sites = sorted({r.site for r in seen})
        labels = sorted({label for r in seen for label in r.labels})
        raise DeployRefused("no_agent", f"no agent that takes deployments answers to {target} (agents seen: "
                            f"{len(seen)}; sites {', '.join(sites) or 'none'}; labels {', '.join(labels) or 'none'})"
                            f": check the target, or give --wait-for-agents to publish it for agents that start "
                            f"later{NOTHING}")
    for key_id in dict.fromkeys(key_ids):
        distrust = [r for r in mine if r.trust and key_id not in r.trust]
        if distrust:
            names = ", ".join(f"{r.agent} (trusts {', '.join(r.trust)})" for r in distrust)
            raise DeployRefused("unknown_key", f"key {key_id} is not trusted by {len(distrust)} agent(s) of "
                                f"{target}: {names}; they would refuse it{NOTHING}")
    return mine
