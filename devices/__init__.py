"""The device side: the submit client (``client``), sensor and camera simulators
(``sensors``, ``scenes``, ``streams``), the GPIO actuator subscriber (``actuator``,
``gpio``, ``commands``), the OpenCV vision kinds (``vision``, ``vision_kinds``),
Home Assistant discovery, and ``fogmesh device`` (``cli``)."""

from fogmesh.devices.client import FogClient, Result, submit, submit_async

__all__ = ["FogClient", "Result", "submit", "submit_async"]
