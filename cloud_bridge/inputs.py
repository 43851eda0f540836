"""What the bridge's dispatcher thread is fed: one frozen event per message
or uplink change, put on its queue by the network threads, so the outbox and
the in-flight table change on one thread, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from fogmesh.mqtt import Message


@dataclass(frozen=True, slots=True)
class FromEdge:
    """A message on the site's broker (offers, commands, sensor data)."""

    message: Message


@dataclass(frozen=True, slots=True)
class FromCloud:
    """A message on the cloud broker (results, commands down)."""

    message: Message


@dataclass(frozen=True, slots=True)
class UplinkChanged:
    """The connection to the cloud broker went up or down."""

    up: bool


BridgeInput = Union[FromEdge, FromCloud, UplinkChanged]
