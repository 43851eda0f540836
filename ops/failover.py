"""What ``fogmesh doctor`` says about a failover list (a cluster's nodes in
``--broker``, the ``--amqp`` URLs): one line per node, ok or why not, and a
verdict over them. Pure: the nodes' answers in, the checks out.

The verdict: ok when every node answers; a warning when some do not, since
agents and devices move to the next node in the list and the fleet runs on
the others; a failure when none answers. A list of one node is one line,
as a single broker always was.
"""

from __future__ import annotations

from dataclasses import dataclass

from fogmesh.ops.report import Check


@dataclass(frozen=True)
class NodeAnswer:
    """One node of a failover list: ``where`` (host:port), whether it answered,
    what it said or why not (``detail``, without ``where``: the line adds it),
    and for a node that did not answer, what to do."""

    where: str
    ok: bool
    detail: str
    fix: str = ""


def node_checks(name: str, answers: list[NodeAnswer], *, label: str, prefix: str = "") -> list[Check]:
    """The verdict line ``name`` and, for a list of more than one node, a line
    per node (``{label} 1``, ``{label} 2``, ... in the list's order, ``under``
    the verdict: a node down is a failure on its line, the verdict's status
    is what counts).
    ``prefix`` starts the verdict's detail (e.g. what the nodes serve)."""
    if not answers:
        raise ValueError("node_checks needs at least one node")
    if len(answers) == 1:
        return [verdict(name, answers, prefix=prefix)]
    lines = [Check(f"{label} {i}", "ok" if a.ok else "fail", f"{a.where}: {a.detail}", under=name)
             for i, a in enumerate(answers, 1)]      # what to do: on the verdict, once
    return [verdict(name, answers, prefix=prefix), *lines]


def verdict(name: str, answers: list[NodeAnswer], *, prefix: str = "") -> Check:
    """ok / warn (some nodes down, the others carry the fleet) / fail (none
    answers); a list of one node: that node's answer."""
    up = [a for a in answers if a.ok]
    down = [a for a in answers if not a.ok]
    n = len(answers)
    if n == 1:
        a = answers[0]
        return Check(name, "ok" if a.ok else "fail", f"{prefix}{a.where}: {a.detail}", "" if a.ok else a.fix)
    if not down:
        return Check(name, "ok", f"{prefix}all {n} nodes answer")
    fixes = "; ".join(dict.fromkeys(a.fix for a in down if a.fix))
    which = ", ".join(a.where for a in down)
    if not up:
        return Check(name, "fail", f"{prefix}none of the {n} nodes answers ({which}: each says why below)", fixes)
    fix = "; ".join(x for x in (fixes, "meanwhile what is started with this list uses the next node in it "
                                "that answers") if x)
    return Check(name, "warn", f"{prefix}{len(up)} of {n} nodes answer; not {which} (see below)", fix)


def first_up(answers: list[NodeAnswer]) -> int | None:
    """The index of the first node that answered: the one the other checks ask."""
    return next((i for i, a in enumerate(answers) if a.ok), None)
