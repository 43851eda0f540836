"""What ``fogmesh doctor`` finds: one :class:`Check` per question, with a
status and, when it is not ok, one line saying what to do. Pure values and
their rendering (table or JSON), so checks and output are tested apart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

STATUSES = ("ok", "info", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    """``info``: a fact, neither good nor bad (e.g. MQTT 5 not offered);
    ``skip``: not checked (nothing to check, or an earlier check failed).
    ``under``: the check this one details (a node of a failover list under
    the list's verdict): its own status is shown, the verdict's counts."""

    name: str
    status: str
    detail: str
    fix: str = ""
    under: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def exit_status(checks: list[Check]) -> int:
    """0 unless a check failed (warnings do not fail a deployment; a node
    down in a list whose verdict is a warning does not either)."""
    return 1 if any(c.status == "fail" and not c.under for c in checks) else 0


def _shown(c: Check) -> str:
    return f"  {c.name}" if c.under else c.name


def render_table(checks: list[Check], *, title: str) -> str:
    width = max([len(_shown(c)) for c in checks] + [5])
    lines = [title]
    for c in checks:
        lines.append(f"  {c.status:<5} {_shown(c):<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"  {'':<5} {'':<{width}}  -> {c.fix}")
    counts = {s: sum(c.status == s for c in checks if not c.under) for s in STATUSES}
    lines.append("summary: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines) + "\n"


def render_json(checks: list[Check], *, title: str) -> str:
    return json.dumps({"title": title, "ok": exit_status(checks) == 0,
                       "checks": [asdict(c) for c in checks]}, indent=2) + "\n"
