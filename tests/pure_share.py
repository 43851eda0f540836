"""The pure share: how many of the non-test Python lines are in the modules
the sans-IO rule covers, overall and per top-level folder (issue #39).

Run from the repository's root::

    python -m tests.pure_share                 # the table
    python -m tests.pure_share --json          # the same figures
    python -m tests.pure_share --at-least 25   # exit status 1 when the share is below 25 %

A line counts when it holds code or a docstring: blank lines and lines with
only a comment do not (read with ``tokenize``, so a ``#`` inside a string is
no comment). Non-test modules: every ``.py`` file outside ``tests/`` and
outside build, cache and hidden folders (:func:`non_test_modules`).

What is pure is :func:`is_pure`, and only there: today the modules listed in
``tests/test_sans_io.py``'s ``PURE_MODULES``, the list the sans-IO rule
checks, so the rule and this figure cannot drift apart.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Top-level folders holding no module of fogmesh's own: the tests, and what tools build or install.
NOT_MODULES = {"tests", "build", "dist", "node_modules", "venv"}
NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}


@cache
def _pure_modules() -> frozenset[str]:
    from tests.test_sans_io import PURE_MODULES
    return frozenset(PURE_MODULES)


def is_pure(module: str) -> bool:
    """Whether the sans-IO rule covers ``module`` (its path from the
    repository's root, with ``/``)."""
    return module in _pure_modules()


def non_test_modules(root: Path = ROOT) -> list[str]:
    """Every non-test Python module, as a path from ``root`` with ``/``."""
    found = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if parts[0] in NOT_MODULES or parts[0].endswith(".egg-info") \
                or any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        found.append("/".join(parts))
    return sorted(found)


def code_lines(source: str) -> int:
    """Lines holding code or a docstring: not blank, not only a comment."""
    rows: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in NOT_CODE:
            rows.update(range(token.start[0], token.end[0] + 1))
    lines = source.splitlines()
    return sum(1 for row in rows if row <= len(lines) and lines[row - 1].strip())


@dataclass
class Count:
    pure: int = 0
    total: int = 0

    @property
    def share(self) -> float:
        """The pure share in per cent (0 with no lines)."""
        return 100 * self.pure / self.total if self.total else 0.0


def count(root: Path = ROOT) -> dict[str, Count]:
    """Code lines, pure and all, per top-level folder, and ``"all"``."""
    modules = non_test_modules(root)
    missing = sorted(_pure_modules() - set(modules)) if root == ROOT else []
    if missing:
        raise SystemExit(f"PURE_MODULES lists modules that are not there: {', '.join(missing)}")
    counts: dict[str, Count] = {}
    overall = Count()
    for module in modules:
        lines = code_lines((root / module).read_text())
        folder = counts.setdefault(module.split("/")[0] if "/" in module else ".", Count())
        for c in (folder, overall):
            c.total += lines
            c.pure += lines if is_pure(module) else 0
    return {**dict(sorted(counts.items())), "all": overall}


def render(counts: dict[str, Count]) -> str:
    lines = ["pure share of the non-test Python code (lines of code or docstring; pure = tests/test_sans_io.py's "
             "PURE_MODULES)", "",
             f"{'folder':<14} {'pure':>7} {'all':>7} {'share':>7}", "-" * 38]
    for folder, c in counts.items():
        if folder == "all":
            lines.append("-" * 38)
        lines.append(f"{folder:<14} {c.pure:>7} {c.total:>7} {c.share:>6.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.pure_share", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="the figures as JSON")
    p.add_argument("--at-least", type=float, metavar="PERCENT",
                   help="exit status 1 when the overall share is below PERCENT")
    args = p.parse_args(argv)
    counts = count()
    if args.json:
        print(json.dumps({k: {"pure": c.pure, "all": c.total, "share": round(c.share, 2)}
                          for k, c in counts.items()}, indent=2))
    else:
        print(render(counts))
    share = counts["all"].share
    if args.at_least is not None and share < args.at_least:
        print(f"the pure share fell to {share:.1f} %, below {args.at_least:g} %: move decisions out of the "
              f"IO shells into pure modules (and list them in tests/test_sans_io.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
