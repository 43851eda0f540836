"""Will a bundle's wheels run on this interpreter? (the one module that
imports ``packaging``). Checked on the agent before anything is fetched, so
an armv7 Pi refuses an x86_64 wheel with a reason instead of failing at
import time after the switch."""

from __future__ import annotations

import platform
from typing import Iterable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from fogmesh.errors import DeployRefused

__all__ = ["check_runs_here", "is_older", "wheel_tags"]


def wheel_tags(filename: str) -> tuple[str, ...]:
    """The tags a wheel's file name carries (``py3-none-any``)."""
    try:
        _name, _version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise DeployRefused("bad_bundle", f"{filename} is not a wheel file name: {exc}") from exc
    return tuple(sorted(str(t) for t in tags))


def check_runs_here(label: str, wheels: Iterable[tuple[str, tuple[str, ...], str | None]],
                    requires_python: str | None) -> None:
    """``wheels``: (file, tags, Requires-Python) each. Raises ``incompatible``."""
    here = {str(t) for t in sys_tags()}
    python = platform.python_version()
    for spec_text, what in [(requires_python, label)] + [(w[2], w[0]) for w in wheels]:
        if not spec_text:
            continue
        try:
            spec = SpecifierSet(spec_text)
        except InvalidSpecifier as exc:
            raise DeployRefused("bad_bundle", f"{what}: Requires-Python {spec_text!r} is not valid: {exc}") from exc
        if not spec.contains(python, prereleases=True):
            raise DeployRefused("incompatible", f"{what} requires Python {spec_text}; this agent runs {python}")
    for file, tags, _ in wheels:
        if not any(str(Tag(*t.split("-", 2))) in here for t in tags if t.count("-") == 2):
            raise DeployRefused("incompatible", f"{label}: wheel {file} ({', '.join(tags)}) does not run on this "
                                f"agent (Python {python}, {platform.machine()}); build the bundle with wheels for it")


def is_older(version: str, than: str) -> bool:
    """Is ``version`` older than ``than``? (PEP 440; unparsable ones compare as text)."""
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return version < than
