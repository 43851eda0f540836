"""Tier 1: the sans-IO core type-checks under ``mypy --strict``.

mypy cannot follow the editable install's import hook, so the installed
layout (the repository's folders as ``fogmesh.broker``, ``fogmesh.edge_agent``,
...) is rebuilt from symlinks in a temporary directory and checked there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sans_io import PURE_MODULES

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
# The installed layout: these folders install as fogmesh.<name> (pyproject's package-dir).
SUBPACKAGES = ["broker", "edge_agent", "cloud_bridge", "devices", "bench", "simulator", "ops", "scenarios",
               "enrollment"]


# Typed shell modules checked as strictly (what the others are configured with).
TYPED_SHELL = ["edge_agent/options.py", "edge_agent/inputs.py", "cloud_bridge/inputs.py", "edge_agent/zygote.py",
               "edge_agent/agent.py", "edge_agent/dispatcher.py", "edge_agent/standing.py", "edge_agent/executor.py",
               "edge_agent/probes.py", "edge_agent/deploying.py", "fogmesh/deploy/signing.py",
               "fogmesh/deploy/compat.py", "fogmesh/deploy/bundle_file.py", "fogmesh/deploy/install.py",
               "fogmesh/deploy/kinds.py", "fogmesh/deploy/probe.py", "fogmesh/deploy/env_store.py",
               "fogmesh/deploy/receiver.py", "fogmesh/deploy/operator.py", "fogmesh/deploy/commands.py",
               "fogmesh/deploy/cli.py", "fogmesh/containers.py",
               "fogmesh/container_services.py", "fogmesh/service_keeper.py", "fogmesh/engine_cli.py",
               "fogmesh/service_socket.py", "edge_agent/links.py", "edge_agent/cli.py",
               "fogmesh/deploy/images.py", "fogmesh/deploy/downloading.py",
               "fogmesh/deploy/registry.py",
               "bench/containers.py", "bench/install_size.py", "bench/fresh_join.py", "fogmesh/deploy/intake.py",
               "edge_agent/queue_intake.py",
               "cloud_bridge/uplink.py", "fogmesh/mqtt/subscriptions.py", "fogmesh/mqtt/connecting.py",
               "fogmesh/dashboard/lines.py", "fogmesh/dashboard/http_server.py"]


def module_name(path: str) -> str:
    top, rest = path.split("/", 1)
    name = rest.removesuffix(".py").replace("/", ".")
    return f"fogmesh.{name}" if top == "fogmesh" else f"fogmesh.{top}.{name}"


def installed_layout(into: Path) -> Path:
    package = into / "fogmesh"
    package.mkdir(parents=True)
    for entry in (ROOT / "fogmesh").iterdir():
        (package / entry.name).symlink_to(entry)
    for sub in SUBPACKAGES:
        (package / sub).symlink_to(ROOT / sub)
    return into


def test_the_pure_core_and_the_agent_options_type_check_strictly(tmp_path):
    pytest.importorskip("mypy")
    where = installed_layout(tmp_path / "layout")
    modules = [module_name(p) for p in [*PURE_MODULES, *TYPED_SHELL]]
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                           "--cache-dir", str(tmp_path / "cache"), *(a for m in modules for a in ("-m", m))],
                          cwd=where, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
