"""Host figures for presence, from psutil (the only module that imports it).

The battery comes from the OS when the host has one (a laptop); otherwise
presence says ``battery: null``. A modelled battery for testbeds of mains-powered
boxes arrives with the fog-collaboration work and plugs in here.
"""

from __future__ import annotations

import os

import psutil

from edge_agent.presence import HostStats
from fogmesh.messages import Battery


class HostMonitor:
    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first call always returns 0.0

    def read(self) -> HostStats:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = 0.0
        battery = None
        try:
            b = psutil.sensors_battery()
        except (RuntimeError, NotImplementedError, OSError):
            b = None
        if b is not None:
            battery = Battery(percent=float(b.percent), plugged=b.power_plugged)
        return HostStats(cpu=psutil.cpu_percent(interval=None),
                         mem=psutil.virtual_memory().percent, load=load, battery=battery)
