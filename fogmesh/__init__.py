"""fogmesh: MQTT publish/subscribe middleware for edge/fog task placement.

The documented Python API is two names::

    from fogmesh import FogClient, submit

Everything installs under this one namespace. ``fogmesh`` itself is the wire
contract every other part imports: topic names (:mod:`fogmesh.topics`),
message schema (:mod:`fogmesh.messages`), the JSON codec
(:mod:`fogmesh.codec`), the task-kind registry, errors, and the one MQTT
client adapter (:mod:`fogmesh.mqtt`). Built on it: ``fogmesh.broker``,
``fogmesh.edge_agent``, ``fogmesh.cloud_bridge``, ``fogmesh.devices``,
``fogmesh.ops``, ``fogmesh.simulator``, ``fogmesh.bench`` (top-level
folders of the repository), and the CLI.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["FogClient", "submit", "__version__"]  # noqa: F822 (resolved by __getattr__)


def __getattr__(name: str) -> Any:
    # Imported on first use: the contract modules must not pull in the client
    # (and paho) just because ``fogmesh.topics`` was imported.
    if name in ("FogClient", "submit"):
        from fogmesh.devices import client
        return getattr(client, name)
    raise AttributeError(f"module 'fogmesh' has no attribute {name!r}")
