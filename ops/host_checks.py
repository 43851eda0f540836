"""``fogmesh doctor``'s questions to this box: Python and package versions,
the state directory (journals, the bridge's outbox), the GPIO pins and the
camera. Each answers with a :class:`~fogmesh.ops.report.Check`."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

from fogmesh.errors import DeviceError
from fogmesh.ops.report import Check

PACKAGES = ("fogmesh", "paho-mqtt", "amqtt", "gpiozero", "opencv-python-headless", "psutil")
STATE_FAIL_BYTES = 64 * 1024 * 1024       # the bridge's reserve; a journal needs headroom too
STATE_WARN_BYTES = 256 * 1024 * 1024


def check_python() -> Check:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    detail = f"Python {platform.python_version()} on {platform.machine()}; " + ", ".join(versions)
    if sys.version_info < (3, 11):
        return Check("python", "fail", detail, "fogmesh needs Python 3.11 or newer")
    if any(v.endswith("missing") for v in versions[:2]):
        return Check("python", "fail", detail,
                     "install fogmesh into the interpreter the services run (docs/raspberry-pi.md, step 1)")
    return Check("python", "ok", detail)


def check_state_dir(path: Path) -> Check:
    """Agents journal accepted tasks there and bridges keep their outbox: a
    directory they cannot write stops them taking work."""
    fix_where = ("point $FOGMESH_STATE_DIR at a writable local disk (the service units use "
                 "/var/lib/fogmesh, StateDirectory=)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Check("state dir", "fail", f"cannot create {path}: {exc.strerror or exc}", fix_where)
    probe = path / f".doctor-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return Check("state dir", "fail", f"cannot write in {path}: {exc.strerror or exc}", fix_where)
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(path).free
    text = f"{path} is writable, {free / 2**20:.0f} MiB free"
    if free < STATE_FAIL_BYTES:
        return Check("state dir", "fail", text, "free space on that disk (or move the state directory): "
                     "below 64 MiB the bridge refuses tasks and a journal may fill")
    if free < STATE_WARN_BYTES:
        return Check("state dir", "warn", text, "less than 256 MiB free: an offline bridge's outbox grows "
                     "here; free space or lower --max-backlog-bytes")
    return Check("state dir", "ok", text)


def check_pins(spec: str | None, *, factory_kind: str = "auto") -> Check:
    """The pin factory gpiozero would use, and whether the configured
    actuator pins can be claimed (each is set to its safe state and released)."""
    from fogmesh.devices.gpio import Actuators, make_pin_factory, parse_pins
    try:
        factory = make_pin_factory(factory_kind)
    except Exception as exc:   # a broken GPIO library install
        return Check("gpio", "fail", f"no pin factory: {exc}", "install gpiozero's back-end (lgpio on a Pi)")
    kind = type(factory).__name__
    real = "Mock" not in kind
    where = f"{'real pins' if real else 'mock pins, no GPIO on this host'} ({kind})"
    if not spec:
        return Check("gpio", "info", f"{where}; no --pins to check")
    try:
        specs = parse_pins(spec)
    except ValueError as exc:
        return Check("gpio", "fail", f"--pins: {exc}",
                     "write NAME=KIND:PIN,... as `fogmesh device actuator --help` shows")
    try:
        Actuators(specs, pin_factory=factory).close()
    except DeviceError as exc:
        return Check("gpio", "fail", f"{where}: {exc}",
                     "use free BCM pin numbers (see `pinout`); stop whatever holds a pin in use, and run as a "
                     "user in group gpio")
    finally:
        close = getattr(factory, "close", None)
        if close is not None:
            close()
    pins = ", ".join(f"{s.name}=GPIO{s.pin}" for s in specs)
    return Check("gpio", "ok", f"{where}: {pins} can be claimed")


def check_camera(source: str | None) -> Check:
    """One frame from the source a camera device would stream."""
    if not source:
        return Check("camera", "skip", "no --camera to check")
    from fogmesh.devices.scenes import make_source
    try:
        frame = make_source(source).next_frame()
    except DeviceError as exc:
        return Check("camera", "fail", str(exc), "is the camera connected (ls /dev/video*) and free, and is "
                     "the user in group video? give video:/dev/videoN, camera:N or a file")
    if frame is None:
        return Check("camera", "fail", f"{source} gave no frame", "check the camera or file")
    height, width = frame.shape[:2]
    return Check("camera", "ok", f"{source}: a {width}x{height} frame")


def check_trust_keys(keys: tuple[str, ...], *, role: str) -> Check:
    """The keys an agent takes deployments signed by (``--trust-key``): each
    must read as a key, and a file anyone else can write lets them swap it."""
    from fogmesh.deploy.signing import PublicKey
    from fogmesh.errors import DeployRefused
    if not keys:
        if role != "agent":
            return Check("trust keys", "skip", "only agents take deployments")
        return Check("trust keys", "info", "no --trust-key given: an agent started like this takes no deployment",
                     "to take `fogmesh deploy`, start the agent (and this check) with --trust-key FILE.pub")
    ids = []
    for key in keys:
        try:
            ids.append(PublicKey.parse(key).key_id)
        except DeployRefused as exc:
            return Check("trust keys", "fail", str(exc), "give the .pub file `fogmesh bundle keygen` wrote")
        path = Path(key)
        if path.exists() and path.stat().st_mode & 0o022:
            return Check("trust keys", "warn", f"{path} can be written by others than its owner",
                         f"chmod go-w {path}: whoever can replace it can deploy code to this box")
    return Check("trust keys", "ok", f"deployments signed by {', '.join(ids)} are taken")


def check_container_engine(image: str | None = None, *, kinds: bool = False) -> Check:
    """Container kinds (``--image-kind``) need podman or docker on the box, and
    a container must start there: one is started for real, from ``image`` or
    the smallest image on the box (never pulled), then with a memory and CPU
    limit as kinds with ``memory=``/``cpus=`` are. What the engine says when
    it cannot is read into a cause and its fix. ``kinds``: this box's agents
    run container kinds (doctor's ``--containers``, ``--container-image``), so
    an engine that cannot start one fails; otherwise that is a warning (an
    agent without ``--image-kind`` never starts a container)."""
    from fogmesh.container_diagnosis import diagnose, smallest_image
    from fogmesh.containers import ContainerError, Engine, local_images, try_start

    def problem(detail: str, fix: str) -> Check:
        if kinds:
            return Check("containers", "fail", detail, fix)
        return Check("containers", "warn", detail, f"{fix}; only agents with --image-kind start containers "
                     "(doctor --containers makes this a failure for a box whose agents do)")
    engine = Engine.detect()
    if engine is None:
        wanted = os.environ.get("FOGMESH_CONTAINER_ENGINE")
        for name in [wanted] if wanted else ["podman", "docker"]:
            path = shutil.which(name)
            if path is None:
                continue
            try:
                Engine(name, path).command(["version"], timeout=30)
            except ContainerError as exc:       # installed, and not answering
                d = diagnose(name, str(exc))
                return problem(f"{name} at {path} does not answer: {d.reason}", d.fix)
        install = "install podman (Debian: apt-get install podman runc) or docker"
        if kinds:
            return Check("containers", "fail", "no container engine: container kinds (--image-kind) cannot run "
                         "here", install)
        return Check("containers", "info", "no container engine: agents here offer no container kinds",
                     f"for --image-kind, {install}")
    where = f"{engine.name} at {engine.path}"
    chosen = image or smallest_image(local_images(engine))
    if chosen is None:
        return Check("containers", "warn", f"{where} answers, but there is no image on this box to start a "
                     "container from: whether one can start is not checked",
                     f"put a small image here once (`{engine.name} pull docker.io/library/busybox` where a registry "
                     f"is reachable, or `{engine.name} import ROOTFS.tar NAME`), then run the doctor again; or "
                     "name one with --container-image")
    started = time.monotonic()
    failed = try_start(engine, chosen)
    ms = 1000 * (time.monotonic() - started)
    if failed is not None:
        d = diagnose(engine.name, failed)
        if d.cause == "no-command":
            return Check("containers", "ok", f"{where}: a container of {chosen} started ({d.reason}): container "
                         "kinds (--image-kind) can run here")
        if d.cause == "image":
            return Check("containers", "fail", f"{where}: {chosen} is not on this box (nothing is pulled)", d.fix)
        return problem(f"{where}: no container can start here: {d.reason}", d.fix)
    limited = try_start(engine, chosen, limits=True)
    if limited is not None:
        d = diagnose(engine.name, limited)
        return Check("containers", "warn", f"{where}: a container starts, but not with a memory or CPU limit: "
                     f"{d.reason}", f"{d.fix}; meanwhile kinds without memory= or cpus= run")
    return Check("containers", "ok", f"{where}: started and removed a container of {chosen} ({ms:.0f} ms), and one "
                 "with a memory and CPU limit: container kinds (--image-kind) can run here")
