"""GPIO actuators through gpiozero: the only module that imports it.

Pins sit behind gpiozero's pin-factory interface: real pins on a Pi, its
MockFactory on a laptop or in tests (where a test reads the mock pin's state).
gpiozero's errors become :class:`fogmesh.errors.DeviceError` here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

from fogmesh.devices.commands import DEFAULT_MAX_PULSE_MS, Command
from fogmesh.errors import DeviceError
from fogmesh.topics import validate_segment

log = logging.getLogger("fogmesh.gpio")

KINDS = ("relay", "led", "buzzer")


@dataclass(frozen=True)
class ActuatorSpec:
    """``relay`` (a DigitalOutputDevice), ``led`` or ``buzzer`` on ``pin``;
    ``safe``: the state it goes to on start and when the broker is lost."""

    name: str
    kind: str
    pin: str
    active_high: bool = True
    safe: str = "off"
    max_pulse_ms: int = DEFAULT_MAX_PULSE_MS


def parse_pins(spec: str) -> list[ActuatorSpec]:
    """``"deterrent=relay:17,lamp=led:27:safe=on,siren=buzzer:22:active_low"``."""
    out: list[ActuatorSpec] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, rest = item.partition("=")
        parts = rest.split(":")
        if not name or len(parts) < 2 or parts[0] not in KINDS:
            raise ValueError(f"bad actuator {item!r}: write NAME=KIND:PIN[:active_low][:safe=on] "
                             f"with KIND one of {', '.join(KINDS)} (e.g. deterrent=relay:17)")
        validate_segment(name, what="actuator name")
        active_high, safe, max_ms = True, "off", DEFAULT_MAX_PULSE_MS
        for opt in parts[2:]:
            if opt == "active_low":
                active_high = False
            elif opt in ("safe=on", "safe=off"):
                safe = opt[5:]
            elif opt.startswith("max_pulse_ms=") and opt[13:].isdigit():
                max_ms = int(opt[13:])
            else:
                raise ValueError(f"bad option {opt!r} in {item!r}: active_low, safe=on|off, max_pulse_ms=N")
        out.append(ActuatorSpec(name, parts[0], parts[1], active_high, safe, max_ms))
    if len({a.name for a in out}) != len(out):
        raise ValueError("actuator names must be unique")
    return out


def make_pin_factory(kind: str = "auto") -> Any:
    """``mock``: gpiozero's MockFactory. ``auto``: the board's own pins, or the
    mock (with a warning) where there are none, so a laptop testbed runs."""
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory
    from gpiozero.pins.mock import MockFactory
    if kind == "mock":
        return MockFactory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Device._default_pin_factory()
        except BadPinFactory:
            log.warning("no GPIO pins on this host: actuators drive gpiozero's mock pins")
            return MockFactory()


class Actuators:
    """The actuators of one device. Not thread-safe: one caller at a time."""

    def __init__(self, specs: list[ActuatorSpec], *, pin_factory: Any) -> None:
        from gpiozero import LED, Buzzer, DigitalOutputDevice
        from gpiozero.exc import GPIOZeroError
        self.specs = {s.name: s for s in specs}
        self.factory = pin_factory
        self._devices: dict[str, Any] = {}
        cls = {"relay": DigitalOutputDevice, "led": LED, "buzzer": Buzzer}
        try:
            for s in specs:
                self._devices[s.name] = cls[s.kind](s.pin, active_high=s.active_high,
                                                    initial_value=s.safe == "on", pin_factory=pin_factory)
        except GPIOZeroError as exc:
            self.close()
            raise DeviceError(f"cannot set up actuator pins: {exc}") from exc

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def state(self, name: str) -> str:
        return "on" if self._devices[name].value else "off"

    def apply(self, command: Command) -> str:
        """Carry out a validated command; returns the state right after it."""
        from gpiozero.exc import GPIOZeroError
        dev = self._devices[command.actuator]
        try:
            if command.op == "on":
                dev.on()
            elif command.op == "off":
                dev.off()
            elif command.op == "toggle":
                dev.toggle()
            else:   # pulse: on for ms, then off, timed by gpiozero's background thread
                dev.blink(on_time=command.ms / 1000, off_time=0, n=1, background=True)
                return "on"
        except GPIOZeroError as exc:
            raise DeviceError(f"actuator {command.actuator!r}: {exc}") from exc
        return self.state(command.actuator)

    def safe(self) -> None:
        """Every actuator to its safe state (pulses stopped)."""
        for name, dev in self._devices.items():
            dev.on() if self.specs[name].safe == "on" else dev.off()

    def close(self) -> None:
        for dev in self._devices.values():
            dev.close()
        self._devices.clear()
