"""The Raspberry Pi guide shows each role's unit as `fogmesh service install
--print` writes it today: a changed generator fails here until the page
shows the new text."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fogmesh.app.cli import main
from fogmesh.ops.units import ROLES

pytestmark = pytest.mark.timeout(60)

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "raspberry-pi.md"
PAIR = re.compile(r"```sh\n\$ (fogmesh service install --print [^\n]+)\n```\n\n```ini\n(.*?)```", re.S)


def shown_units() -> list[tuple[str, str]]:
    return PAIR.findall(GUIDE.read_text())


def test_the_guide_shows_a_unit_for_every_role():
    roles = {next(a for a in shlex.split(cmd) if a in ROLES) for cmd, _ in shown_units()}
    assert roles == set(ROLES)


@pytest.mark.parametrize("command,shown", shown_units(), ids=lambda v: v[:60] if v.startswith("fogmesh") else "")
def test_each_unit_in_the_guide_is_what_the_command_prints(command, shown, capsys):
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out == shown
