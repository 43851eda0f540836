"""Lower layers never import higher ones. Checked statically from each
module's imports: the wire contract (``fogmesh/*.py``) imports nothing built
on it; the parts built on it (agent, bridge, devices, ...) never import the
application layer (``fogmesh/app``: the CLI and the demo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports import imported_names

ROOT = Path(__file__).resolve().parent.parent
BUILT_ON_THE_CONTRACT = ("broker", "edge_agent", "cloud_bridge", "devices", "bench", "simulator", "ops",
                         "scenarios", "enrollment")
# The package's front door re-exports the client (``from fogmesh import FogClient,
# submit``), imported only when those names are first used.
# ``python -m fogmesh`` starts the application.
DOORS = (ROOT / "fogmesh" / "__init__.py", ROOT / "fogmesh" / "__main__.py")


def above(name: str, layers: tuple[str, ...]) -> bool:
    parts = name.split(".")
    return parts[0] == "fogmesh" and len(parts) > 1 and parts[1] in layers


CONTRACT = sorted(p for p in (ROOT / "fogmesh").rglob("*.py") if "app" not in p.relative_to(ROOT).parts
                  and p not in DOORS)


@pytest.mark.parametrize("module", CONTRACT, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_contract_imports_nothing_built_on_it(module):
    bad = {n for n in imported_names(module) if above(n, (*BUILT_ON_THE_CONTRACT, "app"))}
    assert not bad, f"{module.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("folder", BUILT_ON_THE_CONTRACT)
def test_the_parts_never_import_the_application_layer(folder):
    bad = {f"{p.relative_to(ROOT)}: {n}" for p in (ROOT / folder).rglob("*.py") for n in imported_names(p)
           if above(n, ("app",))}
    assert not bad


def test_nothing_imports_the_old_top_level_names():
    old = {"broker", "edge_agent", "cloud_bridge", "devices", "bench", "simulator", "deploy", "ops", "enrollment"}
    bad = {f"{p.relative_to(ROOT)}: {n}" for folder in (*BUILT_ON_THE_CONTRACT, "fogmesh", "tests")
           for p in (ROOT / folder).rglob("*.py") for n in imported_names(p) if n.split(".")[0] in old}
    assert not bad
