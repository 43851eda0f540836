"""What a topic name, a topic filter and one id inside a topic may be
(MQTT's rules and fogmesh's): checks, no IO. :mod:`fogmesh.topics` builds
the tree from these."""

from __future__ import annotations

import re

from fogmesh.errors import TopicError

MAX_TOPIC_BYTES = 65535


def validate_publish_topic(topic: str) -> str:
    """Check that ``topic`` is something a client may publish to.

    Why: a reply_to with a wildcard or an empty level would make the broker
    drop the connection of the agent that publishes the reply.
    """
    if not isinstance(topic, str) or not topic:
        raise TopicError("topic must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise TopicError(f"topic {topic!r} contains a wildcard (+ or #); publish topics cannot")
    if "\x00" in topic:
        raise TopicError("topic contains a NUL character")
    if topic.startswith("$"):
        raise TopicError(f"topic {topic!r} starts with '$', which is reserved for the broker")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise TopicError("topic is longer than 65535 bytes")
    return topic


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Does ``topic`` match ``topic_filter`` (``+`` one level, ``#`` the rest)?
    Topics starting with ``$`` match no filter starting with a wildcard."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    levels = topic.split("/")
    for i, level in enumerate(topic_filter.split("/")):
        if level == "#":
            return True
        if i >= len(levels) or level not in ("+", levels[i]):
            return False
    return len(topic_filter.split("/")) == len(levels)


def validate_root(root: str) -> str:
    """A root is a publish topic without a trailing slash (e.g. ``fog/v1``)."""
    validate_publish_topic(root)
    if root.endswith("/") or root.startswith("/"):
        raise TopicError(f"topic root {root!r} must not start or end with '/'")
    return root


def validate_segment(name: str, *, what: str) -> str:
    """An agent id, device id or similar that becomes one topic level."""
    if not isinstance(name, str) or not name:
        raise TopicError(f"{what} must be a non-empty string")
    if any(c in name for c in "/+#\x00") or name.startswith("$"):
        raise TopicError(f"{what} {name!r} must not contain '/', '+', '#' or start with '$'")
    if len(name) > 128:
        raise TopicError(f"{what} {name!r} is longer than 128 characters")
    return name


def is_segment(name: object) -> bool:
    """Whether ``name`` is an id that can be one topic level (what
    :func:`validate_segment` accepts): where a topic names a box, a level that
    is not one names none."""
    return isinstance(name, str) and 0 < len(name) <= 128 and not name.startswith("$") \
        and not any(c in name for c in "/+#\x00")


SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def is_safe_id(name: str) -> bool:
    """Letters, digits, ``-`` and ``_``: carried unchanged by every broker.
    Other characters MQTT allows (``.``, ``:``, spaces...) some brokers rewrite
    (RabbitMQ maps ``.`` to a level separator), so ids using them are checked
    against the broker at start-up."""
    return SAFE_ID.fullmatch(name) is not None
