"""fogmesh as a user gets it from a wheel, not from this checkout: built,
installed into a fresh virtual environment, run from a directory that holds
no source. The venv sees the dependencies installed for the interpreter that
runs the tests (so nothing is downloaded), but not this repository: what the
CLI needs must be in the wheel.

Whether the tests run in a virtual environment of their own (as most users
run them, and CI) or on the system interpreter, the new venv is pointed at
*that* interpreter's site-packages with a ``.pth`` file, not made with
``--system-site-packages``: from inside a venv that flag reaches the base
interpreter's packages, which lack the dependencies. Directories named in a
``.pth`` file are only added to ``sys.path``: the ``.pth`` files inside them
(this checkout's editable install among them) are not run, and the venv's
own site-packages, holding the wheel, comes first."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(240), pytest.mark.xdist_group("wheel")]   # one wheel, one venv

REPO = Path(__file__).resolve().parent.parent
OURS = ("broker", "edge_agent", "cloud_bridge", "devices", "bench", "simulator", "ops", "scenarios")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path_factory.mktemp("source") / "fogmesh"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                                 "node_modules", ".pytest_cache"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=180)
    (built,) = out.glob("fogmesh-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    purelib = subprocess.run([str(where / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(purelib) / "_fogmesh_test_deps.pth").write_text("\n".join(dependency_dirs()) + "\n")
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    return where


def dependency_dirs() -> list[str]:
    """Where this interpreter (a venv's or the system's) finds fogmesh's dependencies."""
    paths = sysconfig.get_paths()
    dirs = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    # and any other site directory on the path (one named in a .pth file, say)
    dirs += [d for d in sys.path if Path(d).name in ("site-packages", "dist-packages")]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


def test_the_venv_sees_the_dependencies_but_not_this_checkout(venv, tmp_path):
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import paho.mqtt, amqtt, fogmesh; print(fogmesh.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(venv) in done.stdout and str(REPO) not in done.stdout


def run(venv: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "fogmesh"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_installs_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"fogmesh"}
    for data in ("fogmesh/scenarios/conpi-case-study.toml", "fogmesh/dashboard/static/app.js",
                 "fogmesh/broker/mosquitto.conf"):
        assert data in names


def test_the_installed_package_is_the_wheel_not_this_checkout(venv, tmp_path):
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import fogmesh, fogmesh.edge_agent.agent as a, fogmesh.scenarios as s, "
                           "fogmesh.broker as b; "
                           "print(fogmesh.__file__, a.__file__, s.__file__, b.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    for line in done.stdout.split():
        assert str(venv) in line and str(REPO) not in line


def test_the_documented_python_api_imports_from_the_wheel(venv, tmp_path):
    done = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "from fogmesh import FogClient, submit; print(FogClient.__module__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fogmesh.devices.client"


def test_simulate_finds_its_shipped_scenario_from_the_wheel(venv, tmp_path):
    r = run(venv, "simulate", "conpi-case-study", "--scale", "0.1", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "energy" in r.stdout


def test_up_runs_the_whole_system_from_the_wheel(venv, tmp_path):
    r = run(venv, "up", "--tasks", "6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6/6 ok" in r.stdout
