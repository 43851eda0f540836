"""Host figures for presence, from psutil (the only module that imports it).

The battery is, in order: a :class:`~fogmesh.edge_agent.battery.BatteryModel` when one
is configured (a testbed of mains-powered boxes acting out battery-powered
Pis), the OS's battery when the host has one (a laptop), else ``null``.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Callable

import psutil

from fogmesh.announcements import Battery
from fogmesh.edge_agent.battery import BatteryModel
from fogmesh.edge_agent.presence import HostStats


class HostMonitor:
    def __init__(self, *, battery_model: BatteryModel | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first call always returns 0.0
        self.battery_model = battery_model
        self._clock = clock
        self._last = clock()

    def set_battery(self, percent: float) -> None:
        """Move a modelled battery (tests, demos)."""
        if self.battery_model is None:
            self.battery_model = BatteryModel(percent=percent, idle_w=0.0, task_w=0.0)
        else:
            self.battery_model = replace(self.battery_model, percent=percent)

    def read(self, *, running: int = 0) -> HostStats:
        now = self._clock()
        if self.battery_model is not None:
            self.battery_model = self.battery_model.advance(now - self._last, running=running)
        self._last = now
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = 0.0
        battery = self.battery_model.reading() if self.battery_model else self._os_battery()
        return HostStats(cpu=psutil.cpu_percent(interval=None),
                         mem=psutil.virtual_memory().percent, load=load, battery=battery)

    @staticmethod
    def _os_battery() -> Battery | None:
        try:
            b = psutil.sensors_battery()
        except (RuntimeError, NotImplementedError, OSError, AttributeError):
            return None
        return None if b is None else Battery(percent=float(b.percent), plugged=b.power_plugged)
