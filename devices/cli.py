"""``fogmesh device sensor|camera|actuator``: the firmware simulators and the
actuator subscriber as commands. Registered into the one ``fogmesh`` parser by
:mod:`fogmesh.app.cli`; heavy imports (cv2, gpiozero) happen only when run."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable


def add_parser(sub: Any, *, broker_arg: Callable, root_arg: Callable, log_arg: Callable) -> None:
    p = sub.add_parser("device", help="simulated sensors and cameras, and the GPIO actuator subscriber",
                       description="Device-side programs: sensor firmware simulators (push and pull "
                                   "modes), a camera that streams JPEG frames, and the actuator "
                                   "subscriber that drives GPIO pins through gpiozero.")
    dsub = p.add_subparsers(dest="device_command", metavar="DEVICE")
    dsub.required = True

    d = dsub.add_parser("sensor", help="stream readings; answer pull requests; rate set at run time",
                        description="Publish readings on {root}/sensors/{id}/{sensor} at --hz "
                                    "(push), answer {\"reply_to\": topic} on .../{sensor}/get with "
                                    "one fresh reading (pull), and take {\"op\": \"rate\", \"hz\": N} "
                                    "on {root}/sensors/{id}/control (hz 0: pull only).")
    d.add_argument("--id", required=True, help="device id (e.g. greenhouse-3)")
    d.add_argument("--sensors", default="temperature,humidity",
                   help="comma list of temperature, humidity, motion (default: temperature,humidity)")
    d.add_argument("--hz", type=float, default=1.0, help="readings per second per sensor (default: 1; 0: pull only)")
    d.add_argument("--seed", type=int, default=0, help="seed of the simulated readings (default: 0)")
    _ha_args(d)
    for f in (broker_arg, root_arg, log_arg):
        f(d)

    d = dsub.add_parser("camera", help="stream frames from a video, an image folder or a generated scene",
                        description="Publish JPEG frames on {root}/sensors/{id}/{camera}/frame (a JSON "
                                    "header line, then the JPEG bytes: see topics.md) at --fps, "
                                    "settable at run time like a sensor's rate.")
    d.add_argument("--id", required=True, help="device id (e.g. farm-cam)")
    d.add_argument("--camera", default="camera", help="camera name (default: camera)")
    d.add_argument("--source", default="scene",
                   help="scene[:people=N,speed=PX,size=WxH,seed=S] | folder:PATH | video:PATH | "
                        "camera:N (/dev/videoN) (default: scene, one figure walking)")
    d.add_argument("--fps", type=float, default=1.0, help="frames per second (default: 1)")
    d.add_argument("--quality", type=int, default=80, help="JPEG quality 1-100 (default: 80)")
    for f in (broker_arg, root_arg, log_arg):
        f(d)

    d = dsub.add_parser("actuator", help="drive GPIO relays, LEDs, buzzers from command topics",
                        description="Subscribe to {root}/actuators/{id}/+/set, drive the pins with "
                                    "gpiozero (on, off, toggle, pulse for N ms), publish each "
                                    "actuator's state retained on .../state. Pins go to their safe "
                                    "state at start and whenever the broker connection is lost.")
    d.add_argument("--id", required=True, help="device id (e.g. farm-relay)")
    d.add_argument("--pins", required=True,
                   help="NAME=KIND:PIN[:active_low][:safe=on][:max_pulse_ms=N],... with KIND relay, "
                        "led or buzzer (e.g. deterrent=relay:17,lamp=led:27)")
    d.add_argument("--pin-factory", choices=["auto", "mock"], default="auto",
                   help="auto: the board's pins, or gpiozero's mock pins where there are none "
                        "(default: auto)")
    _ha_args(d)
    for f in (broker_arg, root_arg, log_arg):
        f(d)


def _ha_args(d: argparse.ArgumentParser) -> None:
    d.add_argument("--ha-discovery", action="store_true",
                   help="publish Home Assistant MQTT discovery configs (retained), so this device's "
                        "sensors / actuators appear in Home Assistant on fogmesh's own topics")
    d.add_argument("--ha-prefix", default="homeassistant",
                   help="Home Assistant's discovery prefix (default: homeassistant)")


def run(args: argparse.Namespace, *, wait: Callable[[], None]) -> int:
    try:
        device = _build(args)
    except ValueError as exc:
        print(f"fogmesh device {args.device_command}: {exc}", file=sys.stderr)
        return 2
    problem = _id_not_carried(args)
    if problem:
        print(f"fogmesh device {args.device_command}: {problem}", file=sys.stderr)
        return 2
    device.start(timeout=None)      # like agents: a device may start before its broker
    print(f"fogmesh device {args.device_command} {args.id}: running (Ctrl-C to stop)", file=sys.stderr)
    if not device.client.wait_connected(5.0):
        print(f"fogmesh device {args.device_command} {args.id}: waiting for the broker at "
              f"{device.client.url} (start one with `fogmesh broker`)", file=sys.stderr)
    try:
        wait()
    finally:
        device.stop()
    return 0


def _id_not_carried(args: argparse.Namespace) -> str | None:
    """An id with characters some brokers rewrite (RabbitMQ: '.') is checked
    against this broker when it is up; a broker that is not up yet is waited for."""
    from fogmesh.errors import ConnectError, UnsupportedBroker
    from fogmesh.mqtt import ensure_id_carried
    from fogmesh.topics import Topics
    try:
        ensure_id_carried(args.broker, Topics(args.root), what="device id", name=args.id, timeout=5.0)
    except UnsupportedBroker as exc:
        return str(exc)
    except ConnectError:
        return None
    return None


def _build(args: argparse.Namespace) -> Any:
    if args.device_command == "sensor":
        from fogmesh.devices.sensors import make_models
        from fogmesh.devices.streams import SensorDevice
        names = [n.strip() for n in args.sensors.split(",") if n.strip()]
        return SensorDevice(args.broker, device=args.id, sensors=make_models(names), hz=args.hz,
                            seed=args.seed, root=args.root, ha_prefix=args.ha_prefix if args.ha_discovery else None)
    if args.device_command == "camera":
        from fogmesh.devices.scenes import make_source
        from fogmesh.devices.streams import CameraDevice
        return CameraDevice(args.broker, device=args.id, camera=args.camera, source=make_source(args.source),
                            fps=args.fps, quality=args.quality, root=args.root)
    from fogmesh.devices.actuator import ActuatorDevice
    from fogmesh.devices.gpio import make_pin_factory, parse_pins
    return ActuatorDevice(args.broker, device=args.id, specs=parse_pins(args.pins),
                          pin_factory=make_pin_factory(args.pin_factory), root=args.root,
                          ha_prefix=args.ha_prefix if args.ha_discovery else None)
