"""Device side: the submit client (and, later, sensor/camera simulators and GPIO actuators)."""

from devices.client import FogClient, Result, submit, submit_async

__all__ = ["FogClient", "Result", "submit", "submit_async"]
