"""Base images for container tests, built from Debian packages on this box.

No registry is reachable here, so the images that ``Dockerfile`` and
``docker-compose.yml`` name (``python:3.11-slim``, ``eclipse-mosquitto:2``)
are stood in for by images made from one Debian rootfs (mmdebstrap: Python,
pip, mosquitto and its clients). The files stay exactly what a Docker user
runs; only the base images differ.

Nothing is fetched inside an image build: the Python stand-in carries a
wheelhouse of fogmesh's dependencies, made on the host with pip (from PyPI
or pip's cache), and a ``/etc/pip.conf`` that points pip at it only, so the
Dockerfile's ``pip install .`` installs from it.

Everything is cached: the rootfs tar and the wheelhouse under
``~/.cache/fogmesh-test-images`` (keyed by what goes into them), the images
in podman's storage (labelled with the same key, rebuilt when it changes). A
real image of the same name (one a user pulled) is left alone and used. A
file lock keeps the two test workers from building the same thing at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("python3", "python3-pip", "mosquitto", "mosquitto-clients", "passwd")
ROOTFS = "localhost/fogmesh-standin-rootfs:bookworm"
PYTHON = "docker.io/library/python:3.11-slim"
MOSQUITTO = "docker.io/library/eclipse-mosquitto:2"
LABEL = "fogmesh.standin"
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n"

PIP_CONF = """[global]
no-index = true
find-links = /wheelhouse
break-system-packages = true
root-user-action = ignore
"""
PYTHON_FILE = f"""FROM {ROOTFS}
COPY pip.conf /etc/pip.conf
COPY wheelhouse /wheelhouse
RUN ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
"""
MOSQUITTO_FILE = f"""FROM {ROOTFS}
RUN mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log && chown -R mosquitto:mosquitto /mosquitto
EXPOSE 1883
CMD ["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
"""


def cache_dir() -> Path:
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fogmesh-test-images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def containers_conf(where: Path) -> Path:
    """A containers.conf that works on these boxes (runc; no rlimits raised)."""
    conf = where / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return conf


def requirements() -> list[str]:
    """fogmesh's dependencies and its build backend, from pyproject.toml."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(meta["build-system"]["requires"]) + ["wheel"] + list(meta["project"]["dependencies"])


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(args, capture_output=True, timeout=kw.pop("timeout", 300), **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    return done


def _label(image: str) -> str | None:
    """The stand-in key of ``image``; "" for an image that is not ours; None: absent."""
    found = subprocess.run(["podman", "image", "inspect", "--format", f'{{{{index .Labels "{LABEL}"}}}}', image],
                           capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        return None
    out = found.stdout.strip()
    return "" if out in ("", "<no value>") else out


def _rootfs(cache: Path) -> str:
    key = _key(PACKAGES)
    if _label(ROOTFS) != key:
        tar = cache / f"standin-{key}.tar"
        if not tar.exists():
            part = tar.with_name(tar.stem + ".part.tar")     # mmdebstrap picks its output format by the suffix
            _run(["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(PACKAGES)}", "bookworm",
                  str(part)], timeout=400)
            part.rename(tar)
        _run(["podman", "import", "--change", f"LABEL {LABEL}={key}", str(tar), ROOTFS])
    return key


def _wheelhouse(cache: Path) -> tuple[Path, str]:
    reqs = requirements()
    key = _key(reqs, sys.version_info[:2])
    house = cache / f"wheelhouse-{key}"
    if not house.exists():
        part = cache / f"wheelhouse-{key}.part"
        shutil.rmtree(part, ignore_errors=True)
        _run([sys.executable, "-m", "pip", "download", "-q", "-d", str(part), "--only-binary=:all:",
              "--python-version", "3.11", *reqs], timeout=600)
        part.rename(house)
    return house, key


def _build(image: str, containerfile: str, key: str, context: Path, files: dict[str, Path | str]) -> None:
    context.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        if isinstance(source, Path):
            shutil.copytree(source, context / name, dirs_exist_ok=True)
        else:
            (context / name).write_text(source)
    (context / "Containerfile").write_text(containerfile + f"LABEL {LABEL}={key}\n")
    _run(["podman", "build", "-q", "-t", image, str(context)], timeout=600)


def rootfs() -> str:
    """The Debian rootfs image (Python, mosquitto), imported unless present: its name."""
    cache = cache_dir()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _rootfs(cache)
    return ROOTFS


def ensure(work: Path) -> None:
    """The stand-in base images, built unless present (``work``: a scratch dir).
    Needs podman and mmdebstrap, and CONTAINERS_CONF set (:func:`containers_conf`)."""
    cache = cache_dir()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # the other test worker may be building right now
        root_key = _rootfs(cache)
        house, house_key = _wheelhouse(cache)
        py_key = _key(root_key, house_key, PYTHON_FILE, PIP_CONF)
        if _label(PYTHON) not in ("", py_key):
            _build(PYTHON, PYTHON_FILE, py_key, work / "python",
                   {"pip.conf": PIP_CONF, "wheelhouse": house})
        mq_key = _key(root_key, MOSQUITTO_FILE)
        if _label(MOSQUITTO) not in ("", mq_key):
            _build(MOSQUITTO, MOSQUITTO_FILE, mq_key, work / "mosquitto", {})
