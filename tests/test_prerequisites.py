"""The test command sets itself up: what pip cannot install is installed
(root on Debian/Ubuntu) or named in one command to run (anywhere else)."""

from __future__ import annotations

import pytest

from tests import prerequisites

pytestmark = pytest.mark.timeout(30)


def test_everything_the_tests_need_is_present_after_the_test_command_set_up():
    assert prerequisites.missing_packages() == []


def test_without_root_it_stops_at_once_with_the_one_command_to_run(monkeypatch, capsys):
    monkeypatch.setattr(prerequisites, "NEEDS", (prerequisites.Need(("mosquitto", "mosquitto-clients"), "brokers",
                                                                    lambda: False),))
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 1000)
    assert prerequisites.main() == 2
    err = capsys.readouterr().err
    assert "sudo apt-get install -y mosquitto mosquitto-clients" in err
    assert "then run the test command again" in err


def test_ci_runs_exactly_readmes_test_command_in_a_fresh_venv():
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    ci = (repo / ".ci" / "run").read_text().strip().splitlines()
    command = ci[-1]
    assert f"```sh\n{command}\n```" in readme          # the command README shows, word for word
    assert any(line.startswith("python -m venv") for line in ci) and any("/bin/activate" in line for line in ci)
