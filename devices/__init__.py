"""The device side: the submit client (``client``), sensor and camera simulators
(``sensors``, ``scenes``, ``streams``), the GPIO actuator subscriber (``actuator``,
``gpio``, ``commands``), the OpenCV vision kinds (``vision``, ``vision_kinds``),
Home Assistant discovery, and ``fogmesh device`` (``cli``)."""

from __future__ import annotations

from typing import Any

__all__ = ["FogClient", "Result", "submit", "submit_async"]  # noqa: F822 (resolved by __getattr__)


def __getattr__(name: str) -> Any:
    # Imported on first use: an agent loading the vision kinds (entry points
    # in this package) should not import the client and asyncio with them.
    if name in __all__:
        from fogmesh.devices import client
        return getattr(client, name)
    raise AttributeError(f"module 'fogmesh.devices' has no attribute {name!r}")
